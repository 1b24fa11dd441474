"""Ready-made stages for sedamp topologies, named in YAML as ``stages.<module>:<attribute>``.

files
    ``ListFiles`` (source), ``read_text`` (handler), ``WriteFiles`` (sink) and the
    ``atomic_write`` / ``AtomicFile`` helpers the other sinks use.
text
    ``tokenize`` (handler), ``Count`` (key-routed aggregating handler), ``WriteCounts`` (sink).
records
    ``ReadJsonl`` / ``ReadCsv`` (sources), ``parse_json`` and ``transform`` (handlers),
    ``WriteJsonl`` / ``WriteCsv`` (sinks).
burn
    the CPU benchmark workload: ``Seeds`` (source), ``burn`` and ``tiny`` (handlers),
    ``Collect`` (sink), with ``calibrate`` and ``expected_checksum`` helpers.

Everything here is pure Python and uses the standard library only; every event is a
MessagePack value (dicts with str keys, lists, str, bytes, int, float, bool, None).
"""

from __future__ import annotations
