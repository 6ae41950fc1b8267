"""Build the optional C hot path; everything else is in pyproject.toml.

``optional=True``: without a C compiler the package installs without ``_speedups`` and the
pure-Python implementation runs (see ``hiveloop_async/_accel.py``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "hiveloop_async._speedups",
            ["hiveloop_async/_speedups.c"],
            optional=True,
        )
    ]
)
