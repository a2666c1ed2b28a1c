"""Personal data at rest (DESIGN §9): envelope encryption of the values the store keeps.

- `aead.py`   seal and open one value with SM4-GCM or AES-256-GCM (the `cryptography` package)
- `kek.py`    the key-encryption key: from a file or an operator's command; wraps data keys
- `keys.py`   data keys per calendar month (UTC), and the sealed value's format

The store seals at its boundary (`etong/store/sealing.py`): the core keeps plain values.
"""
