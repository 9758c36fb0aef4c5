"""The instruments: what talks to the kernel and the engine (shell-outs, /proc, cgroups, images, timing, plots).

An instrument never knows which notebook calls it: nothing here imports :mod:`labkit.core`, :mod:`labkit.labs`
or :mod:`labkit.app` (tests/test_structure.py enforces it).
"""
