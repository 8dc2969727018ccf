"""Dataset downloads: MovingFashion and LPR750K archives, LPR4M URL lists (see docs/datasets.md)."""

from .archive import UnsafeArchiveError as UnsafeArchiveError
from .archive import safe_extract as safe_extract
from .datasets import LPR750K_PARTS as LPR750K_PARTS
from .datasets import DownloadReport as DownloadReport
from .datasets import RemoteFile as RemoteFile
from .datasets import download_lpr750k as download_lpr750k
from .datasets import download_movingfashion as download_movingfashion
from .datasets import sync_files as sync_files
from .http import DownloadError as DownloadError
from .http import RetryPolicy as RetryPolicy
from .http import fetch_file as fetch_file
from .http import find_confirmation_url as find_confirmation_url
from .manifest import MANIFEST_NAME as MANIFEST_NAME
from .manifest import Manifest as Manifest
from .urllist import UrlListReport as UrlListReport
from .urllist import download_url_lists as download_url_lists

download_lpr4m = download_url_lists

__all__ = [
    "LPR750K_PARTS", "MANIFEST_NAME", "DownloadError", "DownloadReport", "Manifest", "RemoteFile", "RetryPolicy",
    "UnsafeArchiveError", "UrlListReport", "download_lpr4m", "download_lpr750k", "download_movingfashion",
    "download_url_lists", "fetch_file", "find_confirmation_url", "safe_extract", "sync_files",
]
