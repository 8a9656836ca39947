"""TestPipeline on the FnApiRunner: the DirectRunner would try to download Prism, and CI is offline."""
from apache_beam.testing.test_pipeline import TestPipeline


def local_test_pipeline():
    return TestPipeline(runner='FnApiRunner')
