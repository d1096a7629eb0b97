# mirage: the two commands. Everything else lives in scripts/.
.PHONY: run check
run:
	@bash scripts/mirage.sh run
check:
	@bash scripts/mirage.sh check
