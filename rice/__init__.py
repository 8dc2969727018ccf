"""rice: video-to-shop product retrieval (RICE, ICCV 2023) and its baselines."""

__version__ = "0.1.0"
