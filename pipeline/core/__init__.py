"""The pure core, no Beam: line formats, post-processing, geometry, Arrow tables, schemas, dead-letter
records, counts, the summary and which output files are ours. Imports only from config."""
