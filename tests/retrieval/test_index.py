"""FAISS index save/load: a loaded index answers exactly as the saved one and as brute force."""

import numpy as np
import pytest

from rice.retrieval.index import build_index, load_index, save_index, search


def test_saved_and_loaded_index_search_like_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((50, 16)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = rng.standard_normal((9, 16)).astype(np.float32)  # continuous values: no ties
    index = build_index(gallery)
    save_index(index, tmp_path / "gallery.faiss")
    loaded = load_index(tmp_path / "gallery.faiss")
    assert loaded.ntotal == 50 and loaded.d == 16
    scores, ids = search(loaded, queries, 7)
    expected = np.argsort(-(queries @ gallery.T), axis=1)[:, :7]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ gallery.T, expected, axis=1), rtol=1e-5)
    np.testing.assert_array_equal(search(index, queries, 7)[1], ids)
    assert search(loaded, queries, 80)[1].shape == (9, 50)  # k beyond the gallery: all of it


def test_loading_a_missing_index_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.faiss"):
        load_index(tmp_path / "nope.faiss")
