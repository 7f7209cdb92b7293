"""The application layer: one function per operation, shared by the CLI and the REST API.

Each function takes typed parameters (an opened repository, names, options as
values) and returns a result model of :mod:`stasis.app.models`; the rules of an
operation (what is checked first, what is refused, what a job records) live here,
so an interface only parses, calls one function and renders what it returns. Work
that runs as a job is a kind of :mod:`stasis.app.kinds` (its parameters, its VMs,
the one function that runs it), run here by a command or queued by
:mod:`stasis.app.submit` for ``stasis serve``, which runs the same function.

It sits above protection and recovery, which do not import each other, and combines
them where an operation needs both: ``stasis doctor`` (:mod:`stasis.app.doctor`)
looks for the debris of either, and a clone of a VM (:mod:`stasis.app.clone`) takes
a point of it first and makes the clone of that point.
"""
