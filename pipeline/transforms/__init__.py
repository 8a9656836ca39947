"""The PTransforms: read, parse, count, and the whole job. Imports from io, core and config."""
