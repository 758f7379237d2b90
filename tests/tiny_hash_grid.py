"""A small hash-grid config (two dense and two hashed levels) shared by the kernel and network
tests, and the path to the module that owns the table."""


def hash_config(**overrides):
    config = {
        "otype": "HashGrid",
        "n_levels": 4,
        "n_features_per_level": 2,
        "log2_hashmap_size": 10,
        "base_resolution": 4,
        "per_level_scale": 3.0,  # resolutions 4, 12, 36, 108: two dense, two hashed levels
    }
    config.update(overrides)
    return config


def grid_core(encoding):
    """The module that owns ``params`` inside what get_encoding returns."""
    return encoding.encoding.encoding
