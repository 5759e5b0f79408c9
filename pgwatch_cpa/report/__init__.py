"""The performance report: what the statistics say should be fixed, with the exact SQL or setting (reads, never
acts). ``model`` is the versioned JSON contract; ``postgres`` and ``redis`` read one target each; ``build``
assembles a report; ``diff`` compares it with the previous one; ``markdown`` and ``html`` render it.
"""
