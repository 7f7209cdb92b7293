"""The service layer: retention, policies, jobs, the scheduler, notifications, RPO.

Modules here decide; they do not parse options or print. They take their inputs as
plain data (points, holds, rules as dataclasses) and an injected instant, never the
wall clock, so the CLI, the REST API and the scheduler call the same functions and
tests move time by passing another instant.
"""
