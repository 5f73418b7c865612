"""Pretrained weights: torchvision's records, the shared cache, verified downloads, safe loading.

``python -m resnetzoo.weights`` manages the cache from the command line.
"""

from .adapt import adapt_input_conv, fit_state_dict, strip_prefixes
from .files import (
    MIRROR_ENV,
    OFFLINE_ENV,
    cache_dir,
    cached_path,
    copy_into_cache,
    download_url,
    fetch_weights,
    load_state_dict_file,
    sha256_file,
    verify_file,
)
from .records import WeightsRecord, default_record, resolve_pretrained, weights_records

__all__ = [
    "MIRROR_ENV",
    "OFFLINE_ENV",
    "WeightsRecord",
    "adapt_input_conv",
    "cache_dir",
    "cached_path",
    "copy_into_cache",
    "default_record",
    "download_url",
    "fetch_weights",
    "fit_state_dict",
    "load_state_dict_file",
    "resolve_pretrained",
    "sha256_file",
    "strip_prefixes",
    "verify_file",
    "weights_records",
]
