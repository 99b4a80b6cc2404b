"""A Tk drawing pad: draw a character with mouse or touch screen, see the top three live, clear, save.

Strokes are drawn on the Tk canvas and, in step, into a Pillow image that goes through the same preprocessing as
any photo, so the pad shows what `emnist-edge predict` would say about the saved PNG.
Each prediction is also printed to standard output (one line), which the Xvfb test reads.
"""
from __future__ import annotations

import time
from pathlib import Path

from PIL import Image, ImageDraw

from .preprocess import NoCharacter, prepare

SIZE = 280
PEN = 16


def run_pad(model, save_dir: str = ".", top: int = 3) -> int:
    try:
        import tkinter as tk
    except ImportError:
        from .runtime import EdgeError

        raise EdgeError("the drawing pad needs Tk: install python3-tk (Debian/Raspberry Pi OS)") from None
    try:
        root = tk.Tk()
    except tk.TclError as e:
        from .runtime import EdgeError

        raise EdgeError(f"cannot open a window ({e}); is a display available?") from None
    root.title("emnist-edge draw")
    canvas = tk.Canvas(root, width=SIZE, height=SIZE, bg="white", cursor="pencil", highlightthickness=0)
    canvas.grid(row=0, column=0, columnspan=3)
    result = tk.StringVar(value="draw a character")
    tk.Label(root, textvariable=result, font=("TkDefaultFont", 14), width=30).grid(row=1, column=0, columnspan=3)
    state = {"image": Image.new("L", (SIZE, SIZE), 255), "last": None, "pending": None}
    state["pen"] = ImageDraw.Draw(state["image"])

    def predict():
        state["pending"] = None
        try:
            glyph = prepare(state["image"].copy())
        except NoCharacter:
            result.set("draw a character")
            return
        probs = model.predict_proba(glyph.pixels[None])[0]
        best = probs.argsort()[::-1][:top]
        text = "   ".join(f"{model.chars[i]} {probs[i]:.0%}" for i in best)
        result.set(text)
        print(text, flush=True)

    def schedule():  # at most one prediction per 80 ms while drawing
        if state["pending"] is None:
            state["pending"] = root.after(80, predict)

    def down(e):
        state["last"] = (e.x, e.y)
        dot(e.x, e.y)

    def dot(x, y):
        r = PEN // 2
        canvas.create_oval(x - r, y - r, x + r, y + r, fill="black", outline="black")
        state["pen"].ellipse((x - r, y - r, x + r, y + r), fill=0)

    def move(e):
        if state["last"] is None:
            return down(e)
        x0, y0 = state["last"]
        canvas.create_line(x0, y0, e.x, e.y, width=PEN, capstyle=tk.ROUND, smooth=True)
        state["pen"].line((x0, y0, e.x, e.y), fill=0, width=PEN)
        dot(e.x, e.y)
        state["last"] = (e.x, e.y)
        schedule()

    def up(_):
        state["last"] = None
        schedule()

    def clear():
        canvas.delete("all")
        state["image"].paste(255, (0, 0, SIZE, SIZE))
        result.set("draw a character")

    def save():
        path = Path(save_dir) / f"drawing-{time.strftime('%Y%m%d-%H%M%S')}.png"
        state["image"].save(path)
        print(f"saved {path}", flush=True)

    canvas.bind("<Button-1>", down)
    canvas.bind("<B1-Motion>", move)
    canvas.bind("<ButtonRelease-1>", up)
    tk.Button(root, text="Clear", command=clear).grid(row=2, column=0, sticky="ew")
    tk.Button(root, text="Save", command=save).grid(row=2, column=1, sticky="ew")
    tk.Button(root, text="Quit", command=root.destroy).grid(row=2, column=2, sticky="ew")
    root.bind("<Escape>", lambda _: root.destroy())
    root.bind("c", lambda _: clear())
    root.bind("s", lambda _: save())
    print("drawing pad ready", flush=True)
    root.mainloop()
    return 0
