# prefork-interp: build, demo, install and test.
#
#   make demo      build, then run a demo script cold and warm
#   make test      everything CI runs: lint, type check, Rust, Python and Perl suites
#   make install   binary, Python package and Perl module under $(PREFIX)

PREFIX ?= /usr/local
BIN     = target/release/prefork-interp
PERL_SITELIB ?= $(shell perl -MConfig -e 'print $$Config{installsitelib}')

.PHONY: build demo test lint test-rust test-python typecheck-python test-perl install bench clean

build:
	cargo build --release

demo: build
	@examples/demo.sh $(BIN)

test: lint typecheck-python test-rust test-python test-perl

lint:
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings -W clippy::undocumented_unsafe_blocks

test-rust:
	cargo test --release

test-python: build
	python3 -m pytest -q python/tests tests/interactive

typecheck-python:
	cd python && python3 -m mypy --strict prefork_interp

test-perl: build
	prove -r perl/t

install: build
	install -D -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/prefork-interp
	python3 -m pip install --quiet ./python
	install -D -m 644 docs/prefork-interp.1 $(DESTDIR)$(PREFIX)/share/man/man1/prefork-interp.1
	cd perl/lib && find . -name '*.pm' -exec install -D -m 644 {} $(DESTDIR)$(PERL_SITELIB)/{} \;

bench: build
	bench/client.sh

clean:
	cargo clean
