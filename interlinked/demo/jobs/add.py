"""The seed's example, in Python: myfunc(args) returns a + b."""


def myfunc(args):
    mysum = args["a"] + args["b"]
    print(f"myfunc completed with result: {mysum}")
    return mysum
