"""The interactive page (`clipaway-jax app`): upload or pick an image, brush over the object, press
Remove, compare. Gradio, as the field's model demos (and the original CLIPAway's app).

The checkpoint is loaded once, in the background while the page is already up (a request before it
is ready gets a message); requests are queued one at a time (one model in memory, one compiled
program per image size and settings, reused through the pipeline's executable store). Every bad
input is answered with a message on the page, never a stack trace.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

MAX_SIDE = 2048  # larger uploads are refused: the model works at its own size, the rest is transfer and memory
MODES = ("clipaway", "dcgd", "clipaway+dcgd")


class InputError(ValueError):
    """A problem with what the person sent: shown on the page as it is."""


@dataclass(frozen=True)
class Settings:
    mode: str = "clipaway"
    steps: int = 25
    scheduler: str = "ddim"
    guidance_scale: float = 7.5
    seed: int = 42
    dilation: int = 1
    paste_back: int = 0
    seamless: bool = False
    keep_aspect: bool = False
    panels: bool = False
    negative_prompt: str = "monochrome, lowres, bad anatomy, worst quality, low quality"  # or the checkpoint's

    @property
    def seamless_paste_back(self) -> bool:
        """The checkbox counts only with paste-back on (seamless is a way of pasting back)."""
        return self.seamless and self.paste_back > 0


@dataclass
class Outcome:
    result: np.ndarray  # [H, W, 3] float in [0, 1], the input's size
    image: np.ndarray
    mask: np.ndarray  # the mask as used, [H, W] in {0, 1}
    panels: list[np.ndarray]
    texts: str
    seconds: float
    compiled: bool  # this request compiled a new program


class Remover:
    """The pipeline behind the page: loaded once in a background thread, used by one request at a time."""

    def __init__(self, checkpoint: Path, cache_dir: str = ""):
        self.checkpoint, self.cache_dir = Path(checkpoint), cache_dir
        self.ready, self.error = threading.Event(), None
        self.pipe = self.describer = self.defaults = None
        self._seen: set = set()
        self._lock = threading.Lock()

    def start(self) -> Remover:
        threading.Thread(target=self._load, daemon=True, name="clipaway-jax model loading").start()
        return self

    def _load(self) -> None:
        from clipaway_jax.commands import pipeline_args
        from clipaway_jax.pipelines.run import enable_compilation_cache

        try:
            enable_compilation_cache(self.cache_dir)
            args = loading_args(self.checkpoint, self.cache_dir)
            self.pipe, self.describer = pipeline_args.load_pipeline(args)
            self.defaults = Settings(steps=args.steps, scheduler=args.scheduler, guidance_scale=args.guidance_scale,
                                     dilation=args.dilate_iterations, paste_back=args.paste_back,
                                     seamless=args.seamless,
                                     negative_prompt=args.negative_prompt)  # fmt: skip
        except Exception as err:  # shown on the page: the server stays up and says what went wrong
            self.error = f"{type(err).__name__}: {err}"
        finally:
            self.ready.set()

    def check_ready(self) -> None:
        if not self.ready.is_set():
            raise InputError("The model is still loading; try again in a few seconds.")
        if self.error:
            raise InputError(f"The model could not be loaded from {self.checkpoint}: {self.error}")

    def remove(self, image: np.ndarray, mask: np.ndarray, settings: Settings) -> Outcome:
        """image [H, W, 3] in [0, 1]; mask [H, W] in {0, 1}, the image's size."""
        from clipaway_jax.commands import pipeline_args
        from clipaway_jax.pipelines.clipaway import RemovalOptions
        from clipaway_jax.pipelines.run import default_size, embedding_panels, finish, prepare_arrays

        self.check_ready()
        if settings.mode != "clipaway" and self.describer is None:
            raise InputError(f"{settings.mode} needs region descriptions: this checkpoint has no CLIP text tower")
        with self._lock:  # one request at a time on the one model (Gradio's queue already serializes them)
            size = default_size(self.pipe)
            prepared = prepare_arrays(image, mask, size, settings.keep_aspect, "upload")
            options = RemovalOptions(steps=settings.steps, scheduler=settings.scheduler, uncond="mlp",
                                     dilate_iterations=settings.dilation, paste_back=settings.paste_back,
                                     seamless=settings.seamless_paste_back)  # fmt: skip
            key = program_key(settings)
            compiled = key not in self._seen
            call = call_args(settings)
            start = time.perf_counter()
            describer = self.describer if settings.mode != "clipaway" else None
            outputs, descriptions = pipeline_args.guided_call(self.pipe, describer, [prepared], options, call)
            result = finish(prepared, outputs[0], options)
            panels = []
            if settings.panels:
                kwargs = pipeline_args.call_kwargs(call)
                panels = embedding_panels(self.pipe, prepared, options, **kwargs)
            seconds = time.perf_counter() - start
            self._seen.add(key)
        texts = describe_texts(descriptions[0]) if descriptions else ""
        return Outcome(result, prepared.original, prepared.original_mask, panels, texts, seconds, compiled)

    def will_compile(self, settings: Settings) -> bool:
        return program_key(settings) not in self._seen


def program_key(settings: Settings) -> tuple:
    """What selects a compiled program (the model size is fixed): not the seed or the guidance scale."""
    s = settings
    return s.mode, s.steps, s.scheduler, s.dilation, s.paste_back, s.seamless_paste_back, s.panels


def loading_args(checkpoint: Path, cache_dir: str) -> argparse.Namespace:
    """What `load_pipeline` reads: the 9-channel UNet, a describer when the checkpoint can describe."""
    from clipaway_jax.checkpoint import read_manifest

    describe = "clip_text" in read_manifest(checkpoint)["networks"]
    return argparse.Namespace(checkpoint=checkpoint, dtype="auto", unet_variant="inpaint", objects=None,
                              scenes=None, cache_dir=cache_dir, guidance_mode="clipaway+dcgd" if describe else
                              "clipaway", steps=None, scheduler=None, dilate_iterations=None,
                              guidance_scale=None, paste_back=None, seamless=None, negative_prompt=None)  # fmt: skip


def call_args(settings: Settings) -> argparse.Namespace:
    return argparse.Namespace(guidance_mode=settings.mode, seed=int(settings.seed), dual_weight=None, ip_scale=1.0,
                              guidance_scale=settings.guidance_scale, image_tokens="projected",
                              negative_prompt=settings.negative_prompt)  # fmt: skip


def describe_texts(description) -> str:
    scores = lambda pairs: ", ".join(f"{label} {p:.2f}" for label, p in pairs)
    return (f"**T_mask** (negative prompt): {description.t_mask}  \n**T_info** (positive prompt): "
            f"{description.t_info}  \nmask region: {scores(description.mask_scores)}  \nscene: "
            f"{scores(description.scene_scores)}  \nother objects: {scores(description.object_scores)}")  # fmt: skip


# --- reading what the page sends ----------------------------------------------------------------------


def read_inputs(editor: dict | None, mask_file: str | None, upload: np.ndarray | None = None):
    """(image [H, W, 3] in [0, 1], mask [H, W] in {0, 1}) from the editor's value (background + painted
    layers, RGBA uint8), an optional uploaded mask file, and the image as uploaded. The editor's copy of
    an image went through the browser's WebGL canvas, which can shift edge pixels by a few levels: the
    upload's own pixels are used whenever it is the editor's image."""
    from clipaway_jax.pipelines.images import ImageError, read_mask

    background = (editor or {}).get("background")
    if background is None:
        raise InputError("Upload an image (or pick an example) first.")
    background = np.asarray(background)
    h, w = background.shape[:2]
    if max(h, w) > MAX_SIDE:
        raise InputError(f"The image is {w}x{h}; the limit is {MAX_SIDE} px per side. Resize it and upload again.")
    exact = upload is not None and np.asarray(upload).shape[:2] == (h, w)
    image = _rgb(np.asarray(upload) if exact else background)
    if mask_file:
        try:
            mask = read_mask(Path(mask_file))
        except ImageError as err:
            raise InputError(f"The uploaded mask could not be read: {err}") from None
        if mask.shape != (h, w):
            raise InputError(f"The uploaded mask is {mask.shape[1]}x{mask.shape[0]} but the image is {w}x{h}: "
                             "they must be the same size.")  # fmt: skip
        mask = (mask >= 0.5).astype(np.float32)
    else:
        mask = painted_mask(editor.get("layers") or [], (h, w))
    if not mask.any():
        raise InputError("No mask: brush over the object to remove (or upload a mask) first.")
    return image, mask


def painted_mask(layers: list, size: tuple[int, int]) -> np.ndarray:
    """Every painted (non-transparent) pixel of the drawing layers; the eraser makes pixels transparent."""
    mask = np.zeros(size, np.float32)
    for layer in layers:
        layer = np.asarray(layer)
        if layer.ndim == 3 and layer.shape[2] == 4 and layer.shape[:2] == size:
            mask = np.maximum(mask, (layer[..., 3] > 0).astype(np.float32))
    return mask


def _rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, -1)
    if array.shape[2] == 4:  # transparent pixels over white, as an image viewer shows them
        alpha = array[..., 3:].astype(np.float32) / 255.0
        return (array[..., :3].astype(np.float32) / 255.0) * alpha + (1 - alpha)
    return array[..., :3].astype(np.float32) / 255.0


# --- the page -----------------------------------------------------------------------------------------


def model_label(checkpoint: Path, kind: str) -> str:
    if kind == "mini":
        return ("**Model:** the shipped mini model (trained by `make mini` on 64x64 procedural scenes: shapes on "
                "textures). It removes shapes from scenes like the examples; real photos need the published weights.")
    if kind == "tiny":
        return ("**Model:** the tiny built-in set with **random weights: it removes nothing**; it shows every "
                "stage running. Start with `--checkpoint` for a trained model.")  # fmt: skip
    return f"**Model:** `{checkpoint}`"


def example_files(folder: Path, count: int = 6) -> list[dict]:
    """Mini-world test scenes as editor values: the image as background, its mask painted as a layer."""
    from clipaway_jax.mini import shipped

    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for name, scene in shipped.test_scenes(count):
        big = lambda a: np.repeat(np.repeat(a, 4, 0), 4, 1)  # 256 px: easy to paint on
        image, layer = folder / f"{name}.png", folder / f"{name}_mask.png"
        Image.fromarray(big(scene.image)).save(image)
        mask = big(scene.mask)
        rgba = np.zeros((*mask.shape, 4), np.uint8)
        rgba[mask >= 128] = (255, 0, 255, 255)
        Image.fromarray(rgba).save(layer)
        examples.append({"background": str(image), "layers": [str(layer)], "composite": None})
    return examples


def build(remover: Remover, label: str, examples: list[dict]):
    import gradio as gr

    from clipaway_jax.schedulers import SAMPLERS

    def run(upload, editor, mask_file, mode, steps, scheduler, guidance, seed, dilation, paste_back, seamless,
            keep_aspect, panels):  # fmt: skip
        try:
            remover.check_ready()
            image, mask = read_inputs(editor, mask_file, upload)
            negative = (remover.defaults or Settings()).negative_prompt
            settings = Settings(mode, int(steps), scheduler, float(guidance), int(seed), int(dilation),
                                int(paste_back), bool(seamless), bool(keep_aspect), bool(panels), negative)  # fmt: skip
            if remover.will_compile(settings):
                gr.Info("First request with these settings: compiling the removal program (once; later requests "
                        "reuse it).")  # fmt: skip
            outcome = remover.remove(image, mask, settings)
        except InputError as err:
            raise gr.Error(str(err)) from None
        except Exception as err:  # a message on the page, never a stack trace
            raise gr.Error(f"The removal failed: {type(err).__name__}: {err}") from None
        png = write_download(outcome.result)
        note = " (this request compiled the program)" if outcome.compiled else ""
        status = f"Removed in {outcome.seconds:.2f} s{note}."
        before_after = (to_u8(outcome.image), to_u8(outcome.result))
        return (to_u8(outcome.result), before_after, to_u8(outcome.mask), [to_u8(p) for p in outcome.panels],
                outcome.texts, png, status)  # fmt: skip

    defaults = Settings()
    with gr.Blocks(title="clipaway-jax: remove an object") as page:
        gr.Markdown("# Remove an object\nUpload an image (or pick an example), brush over the object, press "
                    "**Remove**.\n\n" + label)  # fmt: skip
        with gr.Row():
            upload = gr.Image(label="Image (upload here; the editor shows it for painting)", type="numpy",
                              image_mode="RGB", format="png", sources=("upload", "clipboard"), elem_id="upload")
            editor = gr.ImageEditor(label="Image: brush over the object", type="numpy", image_mode="RGBA", format="png",
                                    sources=("upload", "clipboard"), layers=False, elem_id="editor",
                                    brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed", default_size=24),
                                    eraser=gr.Eraser(default_size=24), canvas_size=(512, 512))  # fmt: skip
            mask_file = gr.File(label="...or upload a mask (white = remove)", type="filepath", elem_id="mask-file")
        with gr.Accordion("Settings", open=True):
            mode = gr.Radio(list(MODES), value="clipaway", label="guidance")
            steps = gr.Slider(1, 100, value=defaults.steps, step=1, label="steps", elem_id="steps")
            scheduler = gr.Dropdown(sorted(SAMPLERS), value=defaults.scheduler, label="scheduler")
            guidance = gr.Slider(1.0, 15.0, value=defaults.guidance_scale, step=0.5, label="guidance scale",
                                 elem_id="guidance")  # fmt: skip
            seed = gr.Number(value=42, precision=0, label="seed")
            dilation = gr.Slider(0, 10, value=defaults.dilation, step=1, label="mask dilation (5x5 iterations)")
            paste_back = gr.Slider(0, 16, value=0, step=1, label="paste back: feather radius in px (0 = off)",
                                   elem_id="paste-back")  # fmt: skip
            seamless = gr.Checkbox(False, label="seamless paste-back: the fill meets the image's colours at its edge",
                                   elem_id="seamless")  # fmt: skip
            keep_aspect = gr.Checkbox(False, label="keep aspect (pad instead of squash)")
            panels = gr.Checkbox(False, label="show the MLP(e_f) / MLP(e_b) / projection panels")
        button = gr.Button("Remove", variant="primary", elem_id="remove")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            result = gr.Image(label="result", type="numpy", format="png", elem_id="result", interactive=False)
            compare = gr.ImageSlider(label="before / after", type="numpy", interactive=False)
        with gr.Row():
            used = gr.Image(label="mask as used", type="numpy", format="png", elem_id="mask-used", interactive=False)
            gallery = gr.Gallery(label="embedding panels: MLP(e_f) | MLP(e_b) | projection", columns=3)
        texts = gr.Markdown(elem_id="texts")
        download = gr.File(label="download the result (PNG)", elem_id="download")
        if examples:
            gr.Examples(examples=[[None, e] for e in examples], inputs=[upload, editor],
                        label="examples: mini-world test scenes")  # fmt: skip
        upload.upload(lambda image: {"background": image, "layers": [], "composite": image}, upload, editor)
        inputs = [upload, editor, mask_file, mode, steps, scheduler, guidance, seed, dilation, paste_back, seamless,
                  keep_aspect, panels]  # fmt: skip
        outputs = [result, compare, used, gallery, texts, download, status]
        button.click(run, inputs, outputs, concurrency_limit=1)
        page.load(lambda: _set_defaults(remover), None, [steps, scheduler, guidance, dilation, paste_back, seamless])
    return page.queue(default_concurrency_limit=1)


def _set_defaults(remover: Remover):
    """The checkpoint's own defaults into the controls, once it is loaded (the mini model: 25 DDIM steps,
    its guidance scale, paste-back on, seamless)."""
    remover.ready.wait(timeout=600)
    d = remover.defaults or Settings()
    return d.steps, d.scheduler, d.guidance_scale, d.dilation, d.paste_back, d.seamless


def to_u8(array: np.ndarray) -> np.ndarray:
    return (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_download(result: np.ndarray) -> str:
    from clipaway_jax.pipelines.images import write_png_atomic

    folder = Path(tempfile.mkdtemp(prefix="clipaway-jax-app-"))
    path = folder / "removed.png"
    write_png_atomic(path, result)
    return str(path)
