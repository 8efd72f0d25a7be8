"""forging_tf: make claims about data forging checkable."""

import runpy

import setuptools

# The package's face imports nothing, so it can be read here before anything is installed.
PACKAGE = runpy.run_path("forging_tf/__init__.py")

TENSORFLOW = "2.21.0"

setuptools.setup(
    name="forging_tf",
    version=PACKAGE["__version__"],
    description="Reproduction errors, forging attacks and the verifier's game for SGD traces.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["forging_tf", "forging_tf.*"]),
    python_requires=">=3.11",
    install_requires=[
        "absl-py>=2.1",
        "numpy>=1.26",
        "zarr>=3.1.5,<4",  # 3.1.5+ writes LocalStore files atomically (temp file + rename).
        "numcodecs>=0.15,<1",  # blosc for compressed checkpoint chunks (zarr's own codec library)
        "pillow>=10",
        "scipy>=1.11",  # HiGHS linear programs for the in-domain search of exact forging.
        "matplotlib>=3.8",
        "tensorflow-datasets>=4.9.4",
        # tensorflow-datasets downloads need it but do not declare it.
        "importlib_resources>=6",
    ],
    extras_require={
        # TensorFlow comes through exactly one of these, pinned: reproduction errors depend on
        # the TensorFlow build, so a trace records it and results name it.
        "cpu": [f"tensorflow-cpu=={TENSORFLOW}"],
        "gpu": [f"tensorflow[and-cuda]=={TENSORFLOW}"],
        # Scale-out of recomputation (forging-recompute --executor=ray).
        "ray": ["ray>=2.40"],
        # Traces and results on S3 (s3:// URLs, through fsspec); gs:// needs gcsfs instead.
        "s3": ["s3fs>=2024.12"],
        # pyink and ruff are pinned: another version may format or lint differently.
        "test": [
            "pytest>=8",
            # -n 2 --dist loadfile: two test files at a time, as Bazel runs two targets.
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            "ray>=2.40",
            "s3fs>=2024.12",
            "moto[server]>=5",
            "pyink==26.5.1",
            "ruff==0.17.6",
        ],
    },
    entry_points={
        "console_scripts": [
            f"{command}={module}:run" for command, module in PACKAGE["COMMANDS"].items()
        ],
    },
)
