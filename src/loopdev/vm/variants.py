"""The loop-driver designs as real modules: which patch onto Debian's 6.1 ``loop.c`` makes each
of the model's variants, which upstream commit or mail it ports, and which designs cannot be a
module at all."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class Variant:
    """One design: ``patch`` (a file in ``loopdev/vm/patches``) or None for Debian's loop.c as
    it is; ``unavailable`` says why there is no real module (then there is no patch)."""

    name: str
    ports: str
    patch: str | None = None
    unavailable: str = ""

    @property
    def buildable(self) -> bool:
        return not self.unavailable

    def patch_text(self) -> str:
        """The patch (empty for the stock design)."""
        if self.patch is None:
            return ""
        return resources.files("loopdev.vm").joinpath("patches", self.patch).read_text()


_NEEDS_BLOCK_LAYER = (
    "needs new block-layer callbacks ({}), which a module cannot add to the kernel: "
    "no real column (n/a)"
)

#: every model variant, in the model's order
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("v5.16", "drivers/block/loop.c at v5.16 (parent of 6050fa4c84cc)", "v5.16.patch"),
        Variant(
            "v5.17-rc1",
            "6050fa4c84cc + 322c4293ecc5 (loop: make autoclear operation asynchronous)",
            "v5.17-rc1.patch",
        ),
        Variant(
            "taskwork",
            "Tetsuo Handa, [PATCH v2 2/2] loop: use task_work for autoclear operation, "
            "in Jan Kara's reduced form (linux-block, 2022-01-14)",
            "taskwork.patch",
        ),
        Variant(
            "taskwork-openwait",
            "Tetsuo Handa, [PATCH v2 2/2] loop: use task_work for autoclear operation "
            "(linux-block, 2022-01-07)",
            "taskwork-openwait.patch",
        ),
        Variant(
            "post-open-release",
            "Tetsuo Handa, [PATCH 1/4] block: add post_open/post_release block device "
            "callbacks (2022-01-17)",
            unavailable=_NEEDS_BLOCK_LAYER.format("->post_open/->post_release"),
        ),
        Variant(
            "v5.17",
            "bf23747ee053 (Revert \"loop: make autoclear operation asynchronous\")",
            "v5.17.patch",
        ),
        Variant(
            "v5.19",
            "Debian's linux-source-6.1 drivers/block/loop.c as it is (the hch/Tetsuo 5.19 "
            "series: 46dc967445bd ... d292dc80686a)",
        ),
        Variant(
            "v6.11",
            "18048c1af783 (loop: Fix a race between loop detach and loop open)",
            "v6.11.patch",
        ),
        Variant(
            "post-release-2026",
            "Tetsuo Handa, [PATCH v5 2/2] loop: Perform __loop_clr_fd() from post_release "
            "callback",
            unavailable=_NEEDS_BLOCK_LAYER.format("->post_release"),
        ),
    )
}


@dataclass(frozen=True)
class ModuleSource:
    """What a module is built from: a label, the patch text (may be empty) and where it came
    from (a variant's name or a user's patch file)."""

    label: str
    patch: str
    origin: str
    variant: str | None = None  # the model variant it stands for, if any


def variant(name: str) -> Variant:
    """The variant called ``name``; KeyError naming the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}") from None


def module_source(variant_or_patch: str | Path, label: str | None = None) -> ModuleSource:
    """A variant name, or a path to a user's patch file (label: ``label`` or the file's stem).
    Raises KeyError for an unknown name, ValueError for a variant that has no module, OSError
    for an unreadable file."""
    if isinstance(variant_or_patch, Path) or "/" in variant_or_patch or (
        variant_or_patch.endswith((".patch", ".diff")) and variant_or_patch not in VARIANTS
    ):
        path = Path(variant_or_patch)
        text = path.read_text(encoding="utf-8", errors="replace")
        return ModuleSource(label or path.stem, text, str(path))
    v = variant(variant_or_patch)
    if not v.buildable:
        raise ValueError(f"{v.name}: {v.unavailable}")
    return ModuleSource(label or v.name, v.patch_text(), v.name, v.name)
