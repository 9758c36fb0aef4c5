"""Notebook 02, the image: layered, cacheable, reproducible.

One image built here is taken apart two ways (the engine's history, the layer tars of ``docker save``); a running
container's overlayfs directories are read from the host; the first write to a big file from a lower layer (a
copy-up) is timed against the second; a file deleted in a later layer is found as a whiteout; and the same
Dockerfile is built twice with ``--no-cache`` to see which layers come out byte-identical, and what it takes to
make them all match.

The package follows the notebook's sections: :mod:`.declaration` (the lab's names, Dockerfiles and tables, and the
build context), :mod:`.layers` (1 and 4), :mod:`.overlay` (2), :mod:`.copy_up` (3), :mod:`.reproducible` (5) and
:mod:`.claims` (6). The names the notebook and the tests use are re-exported here.
"""

from labkit.labs.image_layers.claims import check_claims
from labkit.labs.image_layers.copy_up import CopyUpResult, run_copy_up
from labkit.labs.image_layers.declaration import LAB, LAYERED, REPRODUCIBLE, STEM, instruction
from labkit.labs.image_layers.layers import LayerResult, history_matches_contents, run_layers
from labkit.labs.image_layers.overlay import OverlayResult, run_overlay
from labkit.labs.image_layers.reproducible import ReproducibleResult, run_reproducible
