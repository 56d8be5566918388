# A program's own sitecustomize: it must still run, once, under leakscope.
import sys

sys.stdout.write("user sitecustomize ran as %s\n" % __name__)
