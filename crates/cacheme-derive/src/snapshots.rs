//! What the macros generate, for representative inputs: each expansion is
//! pretty-printed and compared with its snapshot in `src/snapshots/`.
//! After a deliberate change, rewrite them with
//! `INSTA_UPDATE=always cargo test -p cacheme-derive --lib`, and read the diff.
//!
//! The crate documentation quotes some of them; [`docs_quote_the_snapshots`]
//! checks that the quotes are the snapshots, word for word.

use proc_macro2::TokenStream;
use quote::quote;

/// The expansion of `#[cacheme(args)] item`, formatted.
fn cacheme(args: TokenStream, item: TokenStream) -> String {
    match crate::cacheme::expand(args, item) {
        Ok(tokens) => pretty(tokens),
        Err(error) => panic!("expands: {error}"),
    }
}

/// The expansion of `#[derive(Node)]` on `item`, formatted.
fn node(item: TokenStream) -> String {
    let input = syn::parse2(item).expect("a struct");
    match crate::node::derive_node(&input) {
        Ok(tokens) => pretty(tokens),
        Err(error) => panic!("expands: {error}"),
    }
}

/// The expansion of `#[derive(InvalidNode)]` on `item`, formatted.
fn invalid_node(item: TokenStream) -> String {
    let input = syn::parse2(item).expect("a struct");
    match crate::node::derive_invalid_node(&input) {
        Ok(tokens) => pretty(tokens),
        Err(error) => panic!("expands: {error}"),
    }
}

fn pretty(tokens: TokenStream) -> String {
    match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(error) => panic!("the expansion is not a file ({error}):\n{tokens}"),
    }
}

#[test]
fn a_node_with_every_argument() {
    insta::assert_snapshot!(node(quote! {
        #[node(
            key = "cat:{id}:{name}",
            value = Cat,
            ttl = 300,
            refresh_after = "4m",
            stale = false,
            version = "v2",
            tag = "cats",
            invalid_nodes = Self::groups,
            hit = Self::on_hit,
            miss = Self::on_miss,
            local_ttl = "1500ms",
            local_capacity = 10000,
        )]
        struct CatNode {
            id: u64,
            name: String,
        }
    }));
}

#[test]
fn a_node_with_a_key_method_and_a_local_tier_of_default_capacity() {
    insta::assert_snapshot!(node(quote! {
        #[node(key = Self::cache_key, value = Vec<Cat>, local_ttl = 10)]
        struct Shelf;
    }));
}

#[test]
fn an_invalid_node() {
    insta::assert_snapshot!(invalid_node(quote! {
        #[invalid_node(key = "user:{id}")]
        struct UserInvalid {
            id: u64,
        }
    }));
}

#[test]
fn an_async_fn_with_key_tag_ttl_and_invalid_keys() {
    insta::assert_snapshot!(cacheme(
        quote!(
            key = format!("cat:{}", cat.name),
            tag = "cats",
            ttl = 300,
            invalid_keys = format!("owner:{}", cat.owner)
        ),
        quote! {
            async fn get_cat(cat: &Cat) -> Result<CatInfo, AppError> {
                let info = db::load(cat).await?;
                Ok(info)
            }
        },
    ));
}

#[test]
fn a_plain_fn_with_groups_and_hooks() {
    insta::assert_snapshot!(cacheme(
        quote!(
            key = format!("book:{}>owner", book.id),
            invalid_keys = [format!("user:{}", book.owner_id)],
            hit = on_hit,
            miss = on_miss,
            stale = false
        ),
        quote! {
            fn book_owner(book: &Book) -> Owner {
                db::owner_of(book)
            }
        },
    ));
}

#[test]
fn a_method_with_the_default_key() {
    insta::assert_snapshot!(cacheme(
        quote!(cache = self.cache, local_ttl = 10),
        quote! {
            pub fn count(&self, shelf: &str, min_pages: u32) -> usize {
                self.books.iter().filter(|b| b.shelf == shelf && b.pages >= min_pages).count()
            }
        },
    ));
}

#[test]
fn an_async_method_with_a_node() {
    insta::assert_snapshot!(cacheme(
        quote!(node = CatNode { id: cat.id }, cache = self.cache),
        quote! {
            async fn cat_info(&self, cat: &Cat) -> CatInfo {
                self.db.load(cat.id).await
            }
        },
    ));
}

#[test]
fn a_skip_with_a_node() {
    insta::assert_snapshot!(cacheme(
        quote!(
            node = CatNode {
                id: cat.unwrap().id
            },
            skip = cat.is_none()
        ),
        quote! {
            async fn cat_info(cat: Option<&Cat>) -> Option<CatInfo> {
                db::load(cat?.id).await
            }
        },
    ));
}

#[test]
fn a_skip_with_a_key_and_the_loaded_value_in_groups() {
    insta::assert_snapshot!(cacheme(
        quote!(
            key = format!("cat:{}", cat.unwrap().name),
            skip = cat.is_none(),
            invalid_keys = format!("owner:{}", cacheme_result.owner)
        ),
        quote! {
            fn get_cat(cat: Option<&Cat>) -> std::io::Result<CatInfo> {
                db::load(cat)
            }
        },
    ));
}

#[test]
fn a_batch_fn_with_a_key_and_a_vec() {
    insta::assert_snapshot!(cacheme(
        quote!(
            batch = ids,
            each = id,
            key = format!("cat:{id}"),
            by = |cat: &Cat| cat.id,
            ttl = 300
        ),
        quote! {
            async fn get_cats(db: &Db, ids: Vec<u64>) -> Vec<Cat> {
                db.cats(&ids).await
            }
        },
    ));
}

#[test]
fn a_plain_batch_fn_with_a_node_and_a_map() {
    insta::assert_snapshot!(cacheme(
        quote!(batch = ids, each = id, node = CatNode { id }),
        quote! {
            fn get_cats(ids: Vec<u64>) -> Result<HashMap<u64, Cat>, DbError> {
                DB.cats(&ids)
            }
        },
    ));
}

#[test]
fn a_fn_through_a_re_export() {
    insta::assert_snapshot!(cacheme(
        quote!(crate = my_app::cache, key = format!("cat:{id}")),
        quote! {
            fn get_cat(id: u64) -> Result<CatInfo, AppError> {
                db::load(id)
            }
        },
    ));
}

/// With `crate = ..`, nothing generated names `::cacheme`.
#[test]
fn a_re_export_is_the_only_path_named() {
    let expansions = [
        cacheme(
            quote!(
                crate = my_app::cache,
                node = CatNode { id },
                skip = id == 0,
                hit = on_hit
            ),
            quote!(
                async fn get_cat(id: u64) -> io::Result<Cat> {
                    db::load(id).await
                }
            ),
        ),
        cacheme(
            quote!(
                crate = my_app::cache,
                local_capacity = 10,
                invalid_sources = [changes]
            ),
            quote!(
                fn count(&self, id: u64) -> fmt::Result {
                    db::count(id)
                }
            ),
        ),
        node(quote! {
            #[node(crate = my_app::cache, key = "cat:{id}", value = Cat, local_ttl = 1, invalid_nodes = Self::groups)]
            struct CatNode { id: u64 }
        }),
        invalid_node(quote! {
            #[invalid_node(crate = "my_app::cache", key = "user:{id}")]
            struct UserInvalid { id: u64 }
        }),
    ];
    for expansion in expansions {
        assert!(!expansion.contains("cacheme"), "{expansion}");
        assert!(expansion.contains("my_app::cache::"), "{expansion}");
    }
}

/// The `///` lines of `lib.rs` that quote a snapshot: each quote is the
/// snapshot as written, in a `text` block.
#[test]
fn docs_quote_the_snapshots() {
    let docs = include_str!("lib.rs");
    for name in [
        "an_async_fn_with_key_tag_ttl_and_invalid_keys",
        "a_skip_with_a_node",
        "a_plain_fn_with_groups_and_hooks",
        "a_method_with_the_default_key",
    ] {
        let path = format!(
            "{}/src/snapshots/cacheme_derive__snapshots__{name}.snap",
            env!("CARGO_MANIFEST_DIR")
        );
        let snapshot =
            std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
        // The snapshot's body: after insta's header, which ends with `---`.
        let body = snapshot
            .splitn(3, "---\n")
            .nth(2)
            .unwrap_or_else(|| panic!("{name}: a snapshot has a header"));
        let mut quote = String::from("/// ```text\n");
        for line in body.trim_end().lines() {
            quote.push_str(format!("/// {line}").trim_end());
            quote.push('\n');
        }
        quote.push_str("/// ```\n");
        assert!(
            docs.contains(&quote),
            "lib.rs does not quote the snapshot {name}; the quote should read:\n{quote}"
        );
    }
}
