"""SessionBERT's benchmarks: each module is a script run from the project root as `python -m benchmarks.<name>`
(each prints a table and writes JSON under benchmarks/results/ or reports/)."""
