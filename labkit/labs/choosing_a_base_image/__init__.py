"""Notebook 05, choosing a base image: size, compressed size, push and pull time, start time and attack surface
per base, the chapter's size table beside ours, a native module built for glibc and for musl loaded on a musl
base, and pull time against compressed size.

Every base is a labkit recipe made offline (``labkit setup 05``), each standing in for a registry image it names;
an image the reader pulled themselves (e.g. ``node:20``) can be measured beside them with `extra_images`. Pushes
and pulls go to Debian's docker-registry on 127.0.0.1 for the run only. Every ``run_*`` takes the notebook's
:class:`~labkit.core.session.LabSession` and returns a frozen result whose numbers and sentences are computed
from its tables.

The package follows the notebook's sections: :mod:`.declaration` (the lab's bases, tables and limits),
:mod:`.bases` (sections 1, 2 and 4), :mod:`.native` (3), :mod:`.pulls` (5), :mod:`.startup` (6) and
:mod:`.claims`. The names the notebook and the tests use are re-exported here.
"""

from labkit.labs.choosing_a_base_image.bases import BaseTable, run_bases
from labkit.labs.choosing_a_base_image.claims import check_claims
from labkit.labs.choosing_a_base_image.declaration import (
    BASES,
    GREETING,
    LAB,
    QUICK_BASES,
    STEM,
    validate_extra_images,
)
from labkit.labs.choosing_a_base_image.native import NativeResult, run_native_modules
from labkit.labs.choosing_a_base_image.pulls import PullFit, fit_pulls
from labkit.labs.choosing_a_base_image.startup import StartResult, run_startup
