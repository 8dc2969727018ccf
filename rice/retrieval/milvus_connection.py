"""Connecting to Milvus: a Milvus Lite database (a local ``.db`` path) or a server URI, in one-line errors.

pymilvus is imported here only, on first use, so rice runs without the ``milvus`` extra until a Milvus index is
opened (then the error says how to install it).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

TOKEN_ENV = "RICE_MILVUS_TOKEN"  # a server's credentials come from the environment, never from index.json
LITE_ONE_PROCESS = ("a Milvus Lite database is served by one process at a time: stop the other one (a running "
                    "`rice serve`?) or move the collection to a Milvus server (--uri http://HOST:19530)")

class MilvusNotInstalled(ImportError, ValueError):
    """The ``milvus`` extra is missing (a ValueError too, so every command reports it in one line)."""


def pymilvus_module() -> Any:
    try:
        import pymilvus
    except ImportError:
        raise MilvusNotInstalled("the Milvus backend needs pymilvus and milvus-lite: pip install "
                                 "'rice-retrieval[milvus]'") from None
    # Milvus Lite keeps no MVCC timestamp: pymilvus's query iterator warns on every scan, then pages by a
    # client-side timestamp, which is right for our Strong-consistency collections (set after the import, whose
    # logging configuration would reset it)
    logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
    return pymilvus


def is_lite(uri: str) -> bool:
    """A Milvus Lite database: a local path ending in ``.db`` (anything else is a server URI)."""
    return "://" not in uri and uri.endswith(".db")


def check_uri(uri: str) -> str:
    if is_lite(uri) or re.match(r"^(https?|tcp)://[^/\s]+", uri):
        return uri
    raise ValueError(f"--uri {uri!r}: give a Milvus Lite database (a path ending in .db, e.g. ./catalogue.db) or a "
                     "Milvus server (http://HOST:19530)")


def collection_name_for(folder: str | os.PathLike[str]) -> str:
    """A valid collection name from an index folder's name (letters, digits and underscores)."""
    name = re.sub(r"[^0-9A-Za-z_]", "_", Path(folder).resolve().name)
    return f"rice_{name}"[:255]


def check_collection_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][0-9A-Za-z_]{0,254}", name):
        raise ValueError(f"--collection {name!r}: a Milvus collection name has letters, digits and underscores and "
                         "does not start with a digit")
    return name


def connect(uri: str) -> Any:
    """A client for ``uri``; a Lite database held by another process or an unreachable server is one line."""
    pymilvus = pymilvus_module()
    uri = check_uri(uri)
    if is_lite(uri):
        start_lite(uri)
    try:
        return pymilvus.MilvusClient(uri=uri, token=os.environ.get(TOKEN_ENV, ""))
    except pymilvus.MilvusException as err:
        raise ValueError(f"{uri}: cannot reach Milvus ({err.message}); check the address, and set {TOKEN_ENV} "
                         "if the server needs credentials") from None


def start_lite(path: str) -> None:
    """Start (or reuse) this process's Milvus Lite server of ``path``, which pymilvus then connects to.

    Started here rather than by pymilvus so that a database locked by another process is one line, not the
    traceback milvus-lite logs before pymilvus answers "Open local milvus failed".
    """
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        raise MilvusNotInstalled("a Milvus Lite --uri (a .db path) needs milvus-lite: pip install "
                                 "'rice-retrieval[milvus]', or give a server's http://HOST:19530") from None

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    reasons: list[BaseException] = []  # what milvus-lite logs instead of raising, kept for the one line

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info and record.exc_info[1] is not None:
                reasons.append(record.exc_info[1])

    logger = logging.getLogger("milvus_lite.server_manager")
    keep, propagate = Keep(), logger.propagate
    logger.addHandler(keep)
    logger.propagate = False
    try:
        started = server_manager_instance.start_and_get_uri(path)
    finally:
        logger.removeHandler(keep)
        logger.propagate = propagate
    if started is None:
        reason = reasons[-1] if reasons else None
        if type(reason).__name__ == "DataDirLockedError":
            raise ValueError(f"{path}: cannot open the Milvus Lite database; {LITE_ONE_PROCESS}")
        detail = " ".join(str(reason).split())[:200] if reason else "no reason given"
        raise ValueError(f"{path}: cannot open the Milvus Lite database ({detail}); check that it is a Milvus Lite "
                         "database folder this user may write, or give another --uri")


def release_lite(uri: str) -> None:
    """Stop this process's Milvus Lite server of ``uri``, so another process may open the database."""
    if is_lite(uri):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)


def literal(value: str) -> str:
    """``value`` as a string literal of a Milvus filter expression (ids and groups may hold quotes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
