# prefork-interp: build, demo, install, package and test.
#
#   make demo        build, then run a demo script cold and warm
#   make test        everything CI runs: lint, type check, Rust, Python, Perl
#                    and packaging suites
#   make install     client, man pages, Python package, Perl modules and docs
#                    under $(PREFIX) (DESTDIR for staging); prints the
#                    environment a shell needs to find them
#   make uninstall   removes what make install installed (same variables)
#   make packages    Python sdist and wheel, Perl dist, crate and .deb in $(OUT)

PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
PERLDIR ?= $(PREFIX)/share/perl5
DOCDIR  ?= $(PREFIX)/share/doc/prefork-interp
PYTHON  ?= python3
# Empty: $(PREFIX)/lib/pythonX.Y/site-packages for $(PYTHON)'s X.Y.
PYTHONDIR ?=
OUT     ?= target/packages
BIN      = target/release/prefork-interp
INSTALL_VARS = PREFIX='$(PREFIX)' DESTDIR='$(DESTDIR)' BINDIR='$(BINDIR)' \
	MANDIR='$(MANDIR)' PERLDIR='$(PERLDIR)' DOCDIR='$(DOCDIR)' PYTHON='$(PYTHON)' \
	PYTHONDIR='$(PYTHONDIR)' BIN='$(CURDIR)/$(BIN)'

.PHONY: build demo test lint test-rust test-python typecheck-python test-perl \
	test-packaging install uninstall packages bench clean

build:
	cargo build --release

demo: build
	@examples/demo.sh $(BIN)

test: lint typecheck-python test-rust test-python test-perl test-packaging

lint:
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings -W clippy::undocumented_unsafe_blocks

test-rust:
	cargo test --release

test-python: build
	cargo build --release --example interactive
	python3 -m pytest -q python/tests tests/interactive

typecheck-python:
	cd python && python3 -m mypy --strict prefork_interp

test-perl: build
	prove -r perl/t

test-packaging: build
	tests/packaging.sh

install: build
	@packaging/install.sh install $(INSTALL_VARS)

uninstall:
	@packaging/install.sh uninstall $(INSTALL_VARS)

packages: build
	packaging/dist.sh $(OUT)

bench: build
	bench/client.sh

clean:
	cargo clean
