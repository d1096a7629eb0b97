# mirage: the two commands, and the benchmark. Everything else lives in
# scripts/. `make check ONLY=<scenario>` builds, then boots only that guest
# scenario (the names are in scripts/runner.py's SCENARIOS).
.PHONY: run check bench
run:
	@MIRAGE_HOW='make run' bash scripts/mirage.sh run
check:
	@MIRAGE_HOW='make check$(if $(ONLY), ONLY=$(ONLY))' bash scripts/mirage.sh check $(if $(ONLY),--only '$(ONLY)')
bench:
	@MIRAGE_HOW='make bench' bash scripts/mirage.sh bench
