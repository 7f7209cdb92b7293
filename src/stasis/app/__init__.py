"""The application layer: one function per operation, shared by the CLI and the REST API.

It sits above protection and recovery, which do not import each other, and combines
them where an operation needs both: ``stasis doctor`` (:mod:`stasis.app.doctor`)
looks for the debris of either, and a clone of a VM (:mod:`stasis.app.clone`) takes
a point of it first and makes the clone of that point.
"""
