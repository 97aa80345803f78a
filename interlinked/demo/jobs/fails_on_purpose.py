"""Fails on purpose: the demo shows what a failing job looks like (traceback in the log)."""


def analyse(args):
    samples = args["samples"]
    return sum(samples) / len(samples)  # ZeroDivisionError for an empty list
