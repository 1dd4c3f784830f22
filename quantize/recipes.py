"""Weight-compression recipes as data: each maps field for field onto `nncf.compress_weights`.

A recipe says how weights are stored (mode, group size, the share of layers at 4 bit and the
precision of the rest) and which data-aware methods run when calibration text is given.
Named presets cover the common targets; everything else is `dataclasses.replace(preset, ...)`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

EMBEDDING_GROUP = 128  # the table is looked up, not multiplied: group 32, 64, 128 measured alike
MODES = ("int8_asym", "int8_sym", "int4_sym", "int4_asym")
BACKUPS = ("int8_asym", "int8_sym", "none")


class RecipeError(ValueError):
    """A recipe that NNCF would refuse, or that does not fit the model."""


@dataclass(frozen=True)
class Recipe:
    mode: str = "int4_asym"
    group_size: int = 128  # -1: one scale per output channel
    ratio: float = 1.0  # share of the 4-bit-eligible layers at 4 bit; the rest at `backup`
    backup: str = "int8_asym"  # precision of embeddings, lm_head and layers left out by `ratio`
    all_layers: bool = False  # True: embeddings and lm_head at 4 bit too
    # None: the input embedding table at `backup`, NNCF's rule; "int4_asym" / "int4_sym": at 4 bit in
    # groups of EMBEDDING_GROUP (a separate pass; lm_head keeps `backup`). Not for tied tables.
    embedding_mode: str | None = None
    awq: bool = False  # data-aware methods: they run only when calibration data is given
    scale_estimation: bool = False
    gptq: bool = False
    lora_correction: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise RecipeError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.backup not in BACKUPS:
            raise RecipeError(f"unknown backup {self.backup!r}; choose one of {', '.join(BACKUPS)}")
        if not 0 < self.ratio <= 1:
            raise RecipeError(f"ratio {self.ratio} must be in (0, 1]")
        if self.embedding_mode not in (None, "int4_asym", "int4_sym"):
            raise RecipeError(f"embedding mode {self.embedding_mode!r} must be int4_asym, int4_sym or unset")
        if self.group_size != -1 and self.group_size <= 0:
            raise RecipeError(f"group size {self.group_size} must be positive, or -1 for channel-wise")

    @property
    def bits(self) -> int:
        return 4 if self.mode.startswith("int4") else 8

    @property
    def bits_per_weight(self) -> float:
        """Estimated storage of the 4-bit-eligible weights: values, plus an fp16 scale (and a
        zero point when asymmetric) per group; `ratio` of them at 4 bit, the rest at 8."""
        per_group = 16 + (4 if self.mode.endswith("asym") else 0)  # fp16 scale, u4 zero point
        group = self.group_size if self.group_size > 0 else 1024  # channel-wise: one per row (~1k)
        four = 4 + per_group / group
        return self.ratio * four + (1 - self.ratio) * 8 if self.bits == 4 else 8 + 16 / 1024

    @property
    def methods(self) -> str:
        """The data-aware methods on, joined by "+" ("" for none)."""
        return "+".join(m for m in ("awq", "scale_estimation", "gptq", "lora_correction") if getattr(self, m))

    @property
    def data_aware(self) -> bool:
        return bool(self.methods)

    def fitted(self, matmul_inputs: list[int]) -> Recipe:
        """This recipe, with group size -1 when a MatMul's input size is not a multiple of the group
        (NNCF refuses such a model); said in the log."""
        if self.bits == 8 or self.group_size == -1 or all(n % self.group_size == 0 for n in matmul_inputs):
            return self
        log.warning(
            "input sizes %s are not multiples of group %d: channel-wise", sorted(set(matmul_inputs)), self.group_size
        )
        return dataclasses.replace(self, group_size=-1)

    def without_data(self) -> Recipe:
        """What actually runs when no calibration data is given: no data-aware method."""
        return dataclasses.replace(self, awq=False, scale_estimation=False, gptq=False, lora_correction=False)

    def nncf_kwargs(self, dataset=None) -> dict:
        from .nncf_import import import_nncf

        nncf = import_nncf()

        kwargs = {"mode": nncf.CompressWeightsMode(self.mode)}
        if self.bits == 4:
            kwargs.update(
                group_size=self.group_size,
                ratio=self.ratio,
                all_layers=self.all_layers,
                backup_mode=nncf.BackupMode(self.backup),
            )
        if dataset is not None and self.bits == 4:  # NNCF's INT8 modes take no data
            kwargs.update(
                dataset=dataset,
                awq=self.awq,
                scale_estimation=self.scale_estimation,
                gptq=self.gptq,
                lora_correction=self.lora_correction,
            )
        return kwargs

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS = {
    "int8": Recipe(mode="int8_asym", group_size=-1),
    # The INT4 for a size with no measured row: asymmetric g64, data-free, the input embedding table at
    # INT4 g128 too. Against data-free g128 (optimum-cli's default) on both real sizes: smaller, better
    # WikiText-2 perplexity (0.5B +10.2% vs +20.7%, 1.5B +4.4% vs +6.9%) and top-1 on both texts;
    # held-out code perplexity 0.5B +8.46% vs +8.11%, 1.5B +9.0% vs +10.8%. AWQ and scale estimation
    # were not "never worse than data-free": AWQ raised the held-out code perplexity at 1.5B, scale
    # estimation was worse on every 0.5B variant.
    "int4": Recipe(mode="int4_asym", group_size=64, embedding_mode="int4_asym"),
    # Intel NPU: symmetric INT4, g128 or channel-wise, every eligible layer at 4 bit.
    "int4-npu": Recipe(mode="int4_sym", backup="int8_sym", awq=True, scale_estimation=True),
    # Phones (ONNX Runtime's MatMulNBits, XNNPACK): symmetric INT4 in blocks of 32, its default block.
    "int4-mobile": Recipe(mode="int4_sym", group_size=32, backup="int8_sym", awq=True, scale_estimation=True),
}


# The `int4` preset per Qwen2 size, as overrides; only measured rows (Qwen2.5-Coder-Instruct, WikiText-2
# 4 x 512 tokens and a held-out code text against the fp16 export; benchmarks/RESULTS.md, "INT4 at
# 0.5B and 1.5B"). Data-free with 20% / 10% of the layers (the most sensitive by NNCF's weight
# error) at INT8 beat AWQ at the same size on both: 0.5B +4.67% (AWQ +5.85%), 1.5B +3.83% and code
# +7.85% (AWQ +2.99% but code +8.36%, at 2.6x the compression time). optimum-cli's default
# (g128 data-free, embedding INT8): 0.5B +20.95% at 462 MB, 1.5B +6.93% at 1151 MB.
DEFAULT_INT4 = {
    (896, 24): {"group_size": 32, "ratio": 0.8},  # 0.5B: +4.67%, code +5.36%, top-1 0.867, 447 MB
    (1536, 28): {"group_size": 64, "ratio": 0.9},  # 1.5B: +3.83%, code +7.85%, top-1 0.883, 1127 MB
}


def default_recipe(name: str, hidden_size: int | None = None, layers: int | None = None) -> Recipe:
    """The preset `name`, with the measured per-size overrides for `int4` when the model has a row."""
    recipe = preset(name)
    row = DEFAULT_INT4.get((hidden_size, layers)) if name == "int4" else None
    return dataclasses.replace(recipe, **row) if row else recipe


def ladder(recipe: Recipe, groups: tuple[int, ...] = (64, 32)) -> list[Recipe]:
    """Recipes to try for an accuracy budget, from most to least compressed: `recipe`, then smaller
    `groups`, then 20% fewer layers at 4 bit, and INT8 last. Same mode, symmetry and methods."""
    if recipe.bits == 8:
        return [recipe]
    sizes = [recipe.group_size, *(g for g in groups if recipe.group_size == -1 or g < recipe.group_size)]
    ratios = [recipe.ratio, *([round(recipe.ratio - 0.2, 2)] if recipe.ratio > 0.2 else [])]
    tries = [dataclasses.replace(recipe, group_size=g, ratio=r) for r in ratios for g in sizes]
    int8 = PRESETS["int8"] if recipe.mode.endswith("asym") else Recipe(mode="int8_sym", group_size=-1)
    return [*sorted(dict.fromkeys(tries), key=lambda r: r.bits_per_weight), int8]


def preset(name: str) -> Recipe:
    if name not in PRESETS:
        raise RecipeError(f"unknown recipe {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def compress_openvino(model, recipe: Recipe, dataset=None):
    """The ov.Model with its weights compressed by NNCF as the recipe says, and the recipe that ran
    (group size fitted to the model, data-aware methods dropped when there is no data)."""
    from .nncf_import import import_nncf

    nncf = import_nncf()

    sizes = [
        op.input_value(1).get_partial_shape()[-1 if op.get_attributes().get("transpose_b") else -2].get_length()
        for op in model.get_ops()
        if op.get_type_name() == "MatMul" and op.input_value(1).get_node().get_type_name() in ("Constant", "Convert")
    ]
    recipe = recipe.fitted(sizes) if dataset is not None else recipe.fitted(sizes).without_data()
    if recipe.embedding_mode and not recipe.all_layers:
        if _tied_table(model):
            log.warning("the embedding table is also lm_head (tied): it stays at %s", recipe.backup)
            recipe = dataclasses.replace(recipe, embedding_mode=None)
        else:  # every MatMul left for the second pass, so `ratio` still counts only those
            model = nncf.compress_weights(
                model,
                mode=nncf.CompressWeightsMode(recipe.embedding_mode),
                group_size=EMBEDDING_GROUP,
                ratio=1.0,
                all_layers=True,
                ignored_scope=nncf.IgnoredScope(types=["MatMul"]),
            )
    return nncf.compress_weights(model, **recipe.nncf_kwargs(dataset)), recipe


def compress_npu(model):
    """The Intel NPU's weights (export_openvino's `compress` for its NPU profile): the int4-npu
    preset, data-free; the compressed model and the recipe as the manifest records it."""
    model, recipe = compress_openvino(model, preset("int4-npu"))
    return model, {"name": "int4-npu", **recipe.to_dict(), "calibration": None}


def _tied_table(model) -> bool:
    """Whether a Gather's table (a Constant, maybe through a Convert) also feeds a MatMul."""
    for op in model.get_ops():
        if op.get_type_name() != "Gather":
            continue
        table = op.input_value(0).get_node()
        if table.get_type_name() == "Convert":
            table = table.input_value(0).get_node()
        if table.get_type_name() != "Constant":
            continue
        users = [t.get_node() for out in table.outputs() for t in out.get_target_inputs()]
        users += [
            t.get_node() for u in users if u.get_type_name() == "Convert" for t in u.output(0).get_target_inputs()
        ]
        if any(u.get_type_name() == "MatMul" for u in users):
            return True
    return False
