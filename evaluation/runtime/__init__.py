"""The runtime layer every command shares: files, logs, processes, versions.

- :mod:`.files`: reading every input file (one-line errors for a missing, binary, non-UTF-8,
  empty or malformed file), atomic writes, and the rule that no output overwrites an input.
- :mod:`.log`: append-only JSON-lines logs (bench records, the judge cache, clues profiles)
  with one rule for a write cut short.
- :mod:`.dist`: rank / world / gather / barrier under ``accelerate launch`` or ``torchrun``.
- :mod:`.versions`: the library versions a results file records.
"""
