"""What runs after or beside a job, never on a worker: the HTML report, the generated docs and the
template metadata. Workers never import this package."""
