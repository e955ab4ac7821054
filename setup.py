"""actbench: activation-function optimization through surrogate modeling, in JAX."""

import setuptools

setuptools.setup(
    name="actbench",
    version="0.1.0",
    description=(
        "JAX/Flax reimplementation of AQuaSurF (Bingham & Miikkulainen, NeurIPS 2023): "
        "activation-function search with Fisher and output features and a UMAP surrogate."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["actbench", "actbench.*", "configs"]),
    package_data={"actbench.tables": ["*.json.gz"]},  # Act-Bench-Digits
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2.3",
        "chex>=0.1.87",
        "tensorflow-datasets>=4.9.7",
        "numpy>=1.26",
        "scipy>=1.11",
        "scikit-learn>=1.4",
        "absl-py>=2.0",
        "ml-collections>=0.1.1",
        "umap-learn>=0.5.6",
        "orbax-checkpoint>=0.11",  # resumable training
        "pillow>=10",  # decoding TFDS images
        "importlib_resources>=6",  # needed by `tfds build` to prepare datasets
        "tqdm>=4.66",  # progress bars with ETA
        "matplotlib>=3.8",  # the PNG figures of searches, benchmarks and replays
        "threadpoolctl>=3.1",  # one BLAS thread per eigendecomposition (Fisher features)
        "tensorboardX>=2.6",  # TensorBoard event files of a run, without TensorFlow
    ],
    extras_require={
        # ruff within one minor version: a newer one may add rules to the families selected
        # in ruff.toml.
        # tensorboard reads the event files back; playwright drives Debian's chromium
        # (never a downloaded browser) to test report.html.
        "test": ["pytest>=8", "hypothesis>=6.100", "ruff>=0.17,<0.18", "psycopg[binary]>=3.1",
                 "tensorboard>=2.16", "playwright>=1.40"],
        "dev": ["pytest>=8", "hypothesis>=6.100", "ruff>=0.17,<0.18", "psycopg[binary]>=3.1",
                "tensorboard>=2.16", "playwright>=1.40"],
        # A search shared by workers on several machines, through one PostgreSQL database.
        "postgresql": ["psycopg[binary]>=3.1"],
        # `tfds build` (ImageNet, and TFDS datasets actbench does not prepare) needs TensorFlow.
        "tfds-build": ["tensorflow-cpu; platform_machine == 'x86_64'",
                       "tensorflow; platform_machine != 'x86_64'"],
    },
)
