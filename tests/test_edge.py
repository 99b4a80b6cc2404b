"""Edge: preprocessing on generated images, the metadata reader, the CLI, no TensorFlow, both runtimes, draw."""
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from emnist_edge.edge import preprocess as pp
from emnist_edge.edge.cli import default_model_path, fold_label
from emnist_edge.edge.runtime import EdgeModel, ModelError, load_interpreter_class, read_metadata

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def pen_image(size=(300, 240), width=10, ink=20, paper=235, offset=(0, 0), text="L"):
    """A synthetic handwritten-like glyph: strokes drawn with a round pen."""
    img = Image.new("L", size, paper)
    d = ImageDraw.Draw(img)
    ox, oy = offset
    if text == "L":
        d.line([(100 + ox, 40 + oy), (100 + ox, 190 + oy), (190 + ox, 190 + oy)], fill=ink, width=width, joint="curve")
    elif text == "T":
        d.line([(70 + ox, 50 + oy), (200 + ox, 50 + oy)], fill=ink, width=width)
        d.line([(135 + ox, 50 + oy), (135 + ox, 200 + oy)], fill=ink, width=width)
    return img


def bbox28(pixels, thr=32):
    ys, xs = np.nonzero(pixels >= thr)
    return ys.min(), ys.max(), xs.min(), xs.max()


# --- preprocessing ---------------------------------------------------------------------------------------------

def test_output_is_emnist_shaped_and_fills_like_emnist():
    g = pp.prepare(pen_image())
    assert g.pixels.shape == (28, 28) and g.pixels.dtype == np.uint8 and g.pixels.max() == 255
    y0, y1, x0, x1 = bbox28(g.pixels)
    assert 22 <= max(y1 - y0, x1 - x0) + 1 <= 26  # EMNIST's long side at this threshold: 24 (22-26)
    assert abs((y0 + y1) / 2 - 13.5) <= 1.5 and abs((x0 + x1) / 2 - 13.5) <= 1.5  # centred box


def test_polarity_is_automatic():
    dark_on_light = pp.prepare(pen_image()).pixels
    light_on_dark = pp.prepare(pen_image(ink=235, paper=20)).pixels
    assert np.abs(dark_on_light.astype(int) - light_on_dark).mean() < 2


def test_position_and_margin_do_not_matter():
    a = pp.prepare(pen_image()).pixels
    b = pp.prepare(pen_image(size=(600, 500), offset=(250, 200))).pixels
    assert np.abs(a.astype(int) - b).mean() < 6


def test_stroke_width_is_normalised():
    thin = pp.prepare(pen_image(width=2)).pixels
    thick = pp.prepare(pen_image(width=30)).pixels
    for p in (thin, thick):
        sw = pp.stroke_width(p >= 128)
        assert 1.4 <= sw <= 3.6, sw  # EMNIST's 10-90% range is 1.6-3.2 px


def test_exif_orientation_is_applied():
    img = pen_image(text="T").rotate(90, expand=True)  # stored rotated, EXIF says rotate back
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # 'rotate 90 degrees clockwise to view'
    img.save(buf, format="JPEG", exif=exif, quality=95)
    fixed = pp.prepare(buf.getvalue()).pixels
    upright = pp.prepare(pen_image(text="T")).pixels
    assert np.abs(fixed.astype(int) - upright).mean() < 8
    assert np.abs(pp.prepare(buf.getvalue(), pp.Steps(exif=False)).pixels.astype(int) - upright).mean() > 15


def test_transparent_canvas_is_flattened():
    rgba = Image.new("RGBA", (300, 240), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).line([(100, 40), (100, 190), (190, 190)], fill=(0, 0, 0, 255), width=10)
    a = pp.prepare(rgba).pixels
    b = pp.prepare(pen_image()).pixels
    assert np.abs(a.astype(int) - b).mean() < 6


def test_uneven_lighting_is_flattened():
    img = np.asarray(pen_image(size=(400, 300)), np.float32)
    shade = np.linspace(0.35, 1.0, img.shape[1])[None, :]  # a shadow darkening the left of a phone photo
    shaded = Image.fromarray((img * shade).astype(np.uint8))
    clean = pp.prepare(pen_image(size=(400, 300))).pixels
    assert np.abs(pp.prepare(shaded).pixels.astype(int) - clean).mean() < 8


def test_specks_are_dropped():
    img = pen_image()
    d = ImageDraw.Draw(img)
    for x, y in [(10, 10), (280, 15), (20, 220), (270, 225)]:
        d.ellipse((x, y, x + 3, y + 3), fill=20)
    clean = pp.prepare(pen_image()).pixels
    assert np.abs(pp.prepare(img).pixels.astype(int) - clean).mean() < 3
    assert np.abs(pp.prepare(img, pp.Steps(drop_specks=False)).pixels.astype(int) - clean).mean() > 10


def test_dot_of_i_is_kept():
    img = Image.new("L", (200, 300), 240)
    d = ImageDraw.Draw(img)
    d.line([(100, 110), (100, 260)], fill=10, width=12)
    d.ellipse((93, 60, 107, 74), fill=10)
    g = pp.prepare(img)
    assert g.box[1] <= 62  # the box reaches up to the dot


def test_components_match_a_brute_force_labelling():
    rng = np.random.default_rng(0)
    mask = rng.random((40, 50)) > 0.7
    comps = pp.components(mask)
    assert sum(c["area"] for c in comps) == mask.sum()
    painted = [pp.paint([c], mask.shape) for c in comps]
    # every pair of 8-neighbouring ink pixels lies in one component
    label = np.zeros(mask.shape, int)
    for i, p in enumerate(painted, 1):
        label[p] = i
    ys, xs = np.nonzero(mask)
    for y, x in zip(ys, xs):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = y + dy, x + dx
                if 0 <= yy < 40 and 0 <= xx < 50 and mask[yy, xx]:
                    assert label[yy, xx] == label[y, x]


def test_segment_line_orders_and_spaces():
    img = Image.new("L", (900, 200), 240)
    d = ImageDraw.Draw(img)
    for x0 in (50, 180):  # two letters, a wide gap, one letter
        d.line([(x0, 40), (x0, 160), (x0 + 60, 160)], fill=10, width=10)
    d.line([(520, 40), (620, 40)], fill=10, width=10)
    d.line([(570, 40), (570, 160)], fill=10, width=10)
    glyphs = pp.segment_line(img)
    assert [g is None for g in glyphs] == [False, False, True, False]
    assert glyphs[0].box[0] < glyphs[1].box[0] < glyphs[3].box[0]


@pytest.mark.parametrize("make, error, message", [
    (lambda p: p.write_bytes(b""), pp.ImageError, "not an image"),
    (lambda p: p.write_text("hello, I am text"), pp.ImageError, "not an image"),
    (lambda p: p.write_bytes(png_bytes()[:60]), pp.ImageError, "truncated"),
    (lambda p: p.write_bytes(png_bytes(Image.new("L", (300, 300), 255))), pp.NoCharacter, "no character found"),
    (lambda p: p.write_bytes(png_bytes(Image.new("L", (9000, 9000), 255))), pp.ImageError, "too large"),
])
def test_bad_images_give_one_clear_error(tmp_path, make, error, message):
    path = tmp_path / "x.png"
    make(path)
    with pytest.raises(error, match=message):
        pp.prepare(str(path))


def png_bytes(img=None):
    buf = io.BytesIO()
    (img or pen_image()).save(buf, format="PNG")
    return buf.getvalue()


# --- runtime and model ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_path():
    path = default_model_path()
    assert path.is_file(), f"the shipped default model {path} is missing"
    return path


def test_shipped_model_carries_its_metadata(model_path):
    m = EdgeModel(model_path)
    assert len(m.chars) == 47 and m.chars[:3] == ["0", "1", "2"]
    assert m.mode == "int8" and m.meta["input"]["shape"] == [28, 28, 1]
    assert m.in_q.quantized and m.out_q.quantized


def test_model_without_metadata_or_corrupt_is_refused(tmp_path, model_path):
    blob = model_path.read_bytes()
    assert "emnist_edge" in read_metadata(blob)
    stripped = tmp_path / "stripped.tflite"
    stripped.write_bytes(blob.replace(b"emnist_edge", b"something_x"))
    with pytest.raises(ModelError, match="no 'emnist_edge' metadata"):
        EdgeModel(stripped)
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(blob[: len(blob) // 3])
    with pytest.raises(ModelError):
        EdgeModel(corrupt)
    with pytest.raises(ModelError, match="model not found"):
        EdgeModel(tmp_path / "missing.tflite")


def test_missing_runtime_names_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_runtimes(name, *a, **k):
        if name.startswith(("ai_edge_litert", "tflite_runtime")):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_runtimes)
    with pytest.raises(Exception, match=r"emnist-edge\[edge\]"):
        load_interpreter_class()


def test_batching_gives_the_same_answers(model_path):
    m = EdgeModel(model_path)
    imgs = np.stack([pp.prepare(str(p)).pixels for p in sorted(EXAMPLES.glob("letter-*.png"))])
    together = m.predict_proba(imgs)
    one_by_one = np.concatenate([m.predict_proba(i[None]) for i in imgs])
    assert np.allclose(together, one_by_one, atol=1e-6)


def test_fold_label():
    chars = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")
    assert fold_label("c", chars) == "C" and fold_label("a", chars) == "a" and fold_label("?", chars) is None


# --- the CLI, in a subprocess, with TensorFlow made unimportable -----------------------------------------------

BLOCK_TF = (
    "import sys\n"
    "class _NoTF:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'):\n"
    "            raise ImportError('TensorFlow import blocked: the edge must not need it')\n"
    "sys.meta_path.insert(0, _NoTF())\n"
)


def edge(*args, stdin=None, env=None, python=None, cwd=None):
    code = BLOCK_TF + "from emnist_edge.edge.cli import main\nrc = main()\n" \
        "assert not any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules)\nsys.exit(rc)\n"
    return subprocess.run([python or sys.executable, "-c", code, *args], capture_output=True, text=True,
                          input=stdin, env=dict(os.environ, **(env or {})), timeout=120, cwd=cwd)


def test_predict_json_lines():
    r = edge("predict", "--json", str(EXAMPLES / "digit-7.png"), str(EXAMPLES / "letter-A.png"))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(x["path"]).name for x in rows] == ["digit-7.png", "letter-A.png"]
    for x in rows:
        assert {"path", "label", "confidence", "top_k"} <= set(x) and len(x["top_k"]) == 3
        assert x["label"] == x["top_k"][0]["label"] and 0 < x["confidence"] <= 1


def test_predict_folder_and_stdin():
    r = edge("predict", str(EXAMPLES))
    assert r.returncode == 0 and len(r.stdout.splitlines()) == len(list(EXAMPLES.glob("*.png")))
    r = subprocess.run([sys.executable, "-m", "emnist_edge.edge.cli", "predict", "--json", "-"],
                       input=(EXAMPLES / "digit-3.png").read_bytes(), capture_output=True)
    assert r.returncode == 0 and json.loads(r.stdout)["path"] == "-"


def test_bad_images_are_reported_and_the_rest_processed(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "blank.png").write_bytes(png_bytes(Image.new("L", (100, 100), 255)))
    (tmp_path / "trunc.png").write_bytes((EXAMPLES / "digit-7.png").read_bytes()[:100])
    r = edge("predict", "--json", str(tmp_path / "empty.png"), str(EXAMPLES / "digit-7.png"),
             str(tmp_path / "blank.png"), str(tmp_path / "trunc.png"), str(tmp_path / "missing.png"))
    assert r.returncode == 4 and "Traceback" not in r.stderr
    rows = {Path(x["path"]).name: x for x in map(json.loads, r.stdout.splitlines())}
    assert "label" in rows["digit-7.png"]
    assert "no character found" in rows["blank.png"]["error"] and rows["blank.png"]["exit_code"] == 5
    assert all("error" in rows[n] for n in ("empty.png", "trunc.png", "missing.png"))
    assert len(r.stderr.strip().splitlines()) == 4  # one line per bad image


@pytest.mark.parametrize("model_bytes, code, message", [
    (None, 3, "model not found"),
    (b"TFL3 garbage that is not a model", 3, "not a valid .tflite"),
])
def test_bad_model_is_one_line(tmp_path, model_bytes, code, message):
    model = tmp_path / "m.tflite"
    if model_bytes is not None:
        model.write_bytes(model_bytes)
    r = edge("predict", "--model", str(model), str(EXAMPLES / "digit-7.png"))
    assert r.returncode == code and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_read_a_word():
    r = edge("read", "--json", str(EXAMPLES / "words/line-tab-42.png"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["text"]) == 6 and out["text"][3] == " "  # five characters and the space
    assert all({"label", "confidence", "box"} <= set(c) for c in out["characters"])


def test_eval_manifest(tmp_path):
    rows = ["path,label"] + [f"{p.name},{p.stem.split('-')[1]}" for p in sorted(EXAMPLES.glob("*-?.png"))]
    shutil.copytree(EXAMPLES, tmp_path / "ex")
    (tmp_path / "ex/manifest.csv").write_text("\n".join(rows) + "\n")
    r = edge("eval", "--json", "--manifest", str(tmp_path / "ex/manifest.csv"))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["n"] == len(rows) - 1 and 0 <= rep["top1"] <= rep["top5"] <= 1
    assert set(rep["per_class"]) <= {"7", "3", "A", "e", "K", "t"}


def test_eval_on_fixture_emnist(fixture_data, tmp_path):
    r = edge("eval", "--json", "--split", "byclass", env=dict(fixture_data["env"], EMNIST_EDGE_CACHE=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 62 * 14


def test_info():
    r = edge("info", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["mode"] == "int8" and info["num_classes"] == 47 and info["input"]["dtype"] == "int8"
    assert len(info["sha256"]) == 64 and info["runtime"] in ("ai-edge-litert", "tflite-runtime")


# --- the real dev set (skips without ../shared) ---------------------------------------------------------------

@pytest.mark.data
def test_realworld_dev_accuracy():
    from conftest import realworld_dir

    root = realworld_dir()
    if root is None:
        pytest.skip("realworld-dev not present")
    r = edge("eval", "--json", "--manifest", str(root / "manifest.csv"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["top1"] >= 0.85


# --- edge-only virtual environments (built by tests/run.sh; CI runs these) -------------------------------------

VENVS = {"ai-edge-litert": os.environ.get("EMNIST_EDGE_VENV_LITERT"),
         "tflite-runtime": os.environ.get("EMNIST_EDGE_VENV_TFLITE")}


@pytest.mark.parametrize("runtime", list(VENVS))
def test_edge_only_venv(runtime, tmp_path):
    venv = VENVS[runtime]
    if not venv:
        pytest.skip(f"no edge-only venv for {runtime} (tests/run.sh builds it)")
    py = str(Path(venv) / "bin/python")
    no_tf = subprocess.run([py, "-c", "import tensorflow"], capture_output=True)
    assert no_tf.returncode != 0, "this venv must not have TensorFlow"
    for args in (["info", "--json", "--runtime", runtime],
                 ["predict", "--json", "--runtime", runtime, str(EXAMPLES / "digit-7.png")],
                 ["read", "--runtime", runtime, str(EXAMPLES / "words/word-EDGE.png")]):
        r = subprocess.run([str(Path(venv) / "bin/emnist-edge"), *args], capture_output=True, text=True,
                           cwd=tmp_path, timeout=120)
        assert r.returncode == 0, (args, r.stderr)
    info = json.loads(subprocess.run([str(Path(venv) / "bin/emnist-edge"), "info", "--json"], capture_output=True,
                                     text=True).stdout)
    assert info["runtime"] == runtime
    rows = ["path,label", f"{EXAMPLES / 'digit-7.png'},7", f"{EXAMPLES / 'letter-A.png'},A"]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    r = subprocess.run([str(Path(venv) / "bin/emnist-edge"), "eval", "--manifest", str(tmp_path / "m.csv")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --- the drawing pad under Xvfb -----------------------------------------------------------------------------

@pytest.mark.slow
def test_draw_pad_under_xvfb(tmp_path):
    if not (shutil.which("Xvfb") and shutil.which("xdotool")):
        pytest.skip("Xvfb and xdotool not installed (apt-get install xvfb xdotool)")
    pytest.importorskip("tkinter")
    display = ":97"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "800x600x24"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    env = dict(os.environ, DISPLAY=display)
    pad = None
    try:
        time.sleep(1.0)
        pad = subprocess.Popen([sys.executable, "-m", "emnist_edge.edge.cli", "draw", "--save-dir", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert pad.stdout.readline().strip() == "drawing pad ready"
        time.sleep(1.0)

        def xdo(*a):
            subprocess.run(["xdotool", *a], env=env, check=True, timeout=10)

        win = subprocess.run(["xdotool", "search", "--sync", "--name", "emnist-edge draw"], env=env,
                             capture_output=True, text=True, timeout=10).stdout.split()[0]
        xdo("windowmove", "--sync", win, "0", "0")
        time.sleep(0.3)
        # an L: down the left, then along the bottom (no --sync: Xvfb without a window manager can hang it)
        xdo("mousemove", "100", "50", "sleep", "0.1", "mousedown", "1")
        for y in range(50, 230, 10):
            xdo("mousemove", "100", str(y), "sleep", "0.02")
        for x in range(100, 200, 10):
            xdo("mousemove", str(x), "230", "sleep", "0.02")
        xdo("mouseup", "1")
        time.sleep(0.8)
        xdo("windowfocus", win)  # keys go through XTEST to the focused window (no window manager here)
        xdo("key", "s")
        time.sleep(0.5)
        xdo("key", "Escape")
        out, err = pad.communicate(timeout=20)
    finally:
        if pad and pad.poll() is None:
            pad.kill()
        xvfb.terminate()
    lines = out.splitlines()
    predictions = [line for line in lines if "%" in line]
    assert predictions, (out, err)
    assert len(predictions[-1].split()) == 6  # three characters with their probabilities
    saved = list(tmp_path.glob("drawing-*.png"))
    assert saved and any(line.startswith("saved") for line in lines)
    assert pad.returncode == 0
