"""Section 6: the chapter's claims about images and layers, and our findings beyond them."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, verdict
from labkit.labs.image_layers.copy_up import CopyUpResult
from labkit.labs.image_layers.declaration import (
    MIB,
)
from labkit.labs.image_layers.layers import LayerResult
from labkit.labs.image_layers.overlay import OverlayResult
from labkit.labs.image_layers.reproducible import ReproducibleResult


def check_claims(ledger: ClaimLedger, layered: LayerResult, overlay: OverlayResult, copy_up: CopyUpResult,
                 repro: ReproducibleResult) -> None:
    """The chapter's claims about layers and our findings beyond them, each with a criterion and a verdict computed
    from this notebook's measurements."""
    made = int((~layered.layers["empty_layer"]).sum())
    config_layers = layered.config_layers
    ledger.check(
        "layers.per_instruction", value=made,
        measured=f"BuildKit: {made} layers for {len(layered.layers)} history entries (the imported base and each "
                 f"instruction); per builder, layers made by " + "; ".join(
                     f"{b}: " + ", ".join(k for k in ("RUN", "COPY", "ENV", "WORKDIR", "CMD")
                                          if any(layered.made_layer(k, b)))
                     for b in sorted(layered.instructions["builder"].unique()))
                 + f"; history size = files + symlinks in the tar on {int(layered.layers['agree'].sum())} of "
                   f"{len(layered.layers)} entries",
        verdict=verdict(layered.file_system_layers and layered.all_agree, caveat=bool(config_layers)),
        caveat=(f"config-only instructions made a layer anyway: {', '.join(config_layers)} — an empty one, "
                "the folder already existed; so an image's layer count depends on the builder")
        if config_layers else "")

    written, read = overlay.row("written inside"), overlay.row("only read")
    union = bool(written["in_upper"] and not written["in_lower"] and written["in_merged"]
                 and read["in_lower"] and not read["in_upper"] and read["in_merged"])
    ledger.demonstrate(
        "overlay.union", shown=union,
        measured=f"written inside: upper {bool(written['in_upper'])}, lower {bool(written['in_lower'])}, merged "
                 f"{bool(written['in_merged'])}; only read: upper {bool(read['in_upper'])}, lower "
                 f"{bool(read['in_lower'])}, merged {bool(read['in_merged'])}")

    first, second = copy_up.median_ms("big", "first"), copy_up.median_ms("big", "second")
    small_first = copy_up.median_ms("small", "first")
    appended = overlay.row("appended to")
    full_copy = int(appended["upper_bytes"]) == int(appended["lower_bytes"]) + 1
    costly = first > 2 * second and first > 2 * small_first
    ledger.check(
        "overlay.copy_up", value=first / second,
        measured=f"after a one-byte append UpperDir holds {int(appended['upper_bytes']):,} bytes of a "
                 f"{int(appended['lower_bytes']):,}-byte file; first append {first:.1f} ms, second {second:.2f} ms, "
                 f"first append to a small file {small_first:.2f} ms ({copy_up.big_bytes / MIB:.0f} MiB file)",
        verdict=verdict(full_copy and costly))

    kept = layered.image_bytes("deleted in a later layer") - layered.image_bytes("deleted in the same RUN")
    ledger.check(
        "layers.delete_does_not_shrink", value=kept / MIB,
        measured=f"the image is {kept / MIB:.1f} MiB larger than the one-RUN variant; the whiteout hides "
                 f"{layered.wasted_bytes / MIB:.1f} MiB of a {layered.blob_bytes / MIB:.0f} MiB blob",
        verdict=verdict(kept >= 0.9 * layered.blob_bytes))

    as_is, normalised = repro.differing("as is"), repro.differing("normalised")
    ledger.check(
        "repro.timestamps", value=len(normalised),
        measured=f"as is: {len(as_is)} of {repro.layers_made('as is')} layers differed; with SOURCE_DATE_EPOCH, "
                 f"mtimes pinned, the source as a stamped tar and an /etc/hosts of its own: {len(normalised)} of "
                 f"{repro.layers_made('normalised')}; image ids "
                 f"{'equal' if repro.same_image('normalised') else 'still differ'}",
        verdict=verdict(bool(as_is) and not normalised, caveat=not repro.same_image("normalised")),
        caveat="the layers match but the image ids do not; the image configs, which hold creation times, were not "
               "compared" if not repro.same_image("normalised") else "")
