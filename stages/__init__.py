"""Ready-made stages for sedamp topologies, named in YAML as ``stages.<module>:<attribute>``.

files
    ``ListFiles`` (source), ``read_text`` / ``read_bytes`` (handlers), ``WriteFiles`` (sink) and the
    ``atomic_write`` / ``AtomicFile`` helpers the other sinks use.
text
    ``tokenize`` (handler), ``Count`` (key-routed aggregating handler), ``WriteCounts`` (sink).
records
    ``ReadJsonl`` / ``ReadCsv`` (sources), ``parse_json``, ``transform`` and ``Validate``
    (handlers),
    ``WriteJsonl`` / ``WriteCsv`` (sinks).
images
    ``Thumbnail`` (handler: decode, EXIF orientation, resize, convert, encode) and the
    ``open_image`` / ``resize`` / ``encode`` functions; needs Pillow
    (``pip install 'sedamp[images]'``). ``Decode``, ``Resize``, ``Blur``, ``Sharpen``,
    ``Convert`` and ``Encode`` (handlers) pass images between stages as NumPy arrays;
    they need NumPy too (``pip install 'sedamp[arrays]'``).
burn
    the CPU benchmark workload: ``Seeds`` (source), ``burn`` and ``tiny`` (handlers),
    ``Collect`` (sink), with ``calibrate`` and ``expected_checksum`` helpers.

Everything here but ``images`` is pure Python on the standard library; every event is a
MessagePack value (dicts with str keys, lists, str, bytes, int, float, bool, None), or
a NumPy array for the image stages on arrays.
"""

from __future__ import annotations
