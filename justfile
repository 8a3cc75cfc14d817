# Everyday shortcuts over scripts/. `just` is optional: on a fresh machine
# without it, run `./scripts/test` (installs redis-server if missing, then
# runs every check and test) and `cargo run --example quickstart` directly.

# Run the quickstart example.
demo:
    ./scripts/demo

# Run every check and test (fmt, clippy, tests, doc tests); prints `test: ok`.
test *args:
    ./scripts/test {{args}}

# Check formatting and run clippy.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Format the workspace.
fmt:
    cargo fmt --all
