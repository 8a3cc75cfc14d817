//! Key templates (`"cat:{id}"`): parsing and the checks that keep keys
//! injective. Shared by `#[derive(Node)]` and `#[derive(InvalidNode)]`.
//!
//! The runtime escapes every placeholder value (`cacheme::key::push_escaped`):
//! ASCII characters other than letters, digits, `_`, `-` and `.` never appear
//! unescaped in a value. So if two placeholders are separated by literal text
//! that contains one such character, a key can be split back into its values
//! in exactly one way, and different values always give different keys.

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Literal text, with `{{` and `}}` already turned into `{` and `}`.
    Literal(String),
    /// `{field}`: the field's value, escaped.
    Field(String),
}

/// Parse `template` and check it against the fields of the struct `owner`.
///
/// `fields` are the field names as written in placeholders (raw identifiers
/// without their `r#`). The error is a complete message for the user.
pub(crate) fn parse(
    template: &str,
    owner: &str,
    fields: &[String],
) -> Result<Vec<Segment>, String> {
    if template.is_empty() {
        return Err(format!(
            "the key template is empty: write literal text and `{{field}}` placeholders, e.g. \"{}\"",
            example(owner, fields)
        ));
    }
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '}' => {
                return Err(
                    "unmatched `}` in the key template: write `}}` for a literal `}`, or open the placeholder with `{`"
                        .to_owned(),
                );
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some('{') | None => {
                            return Err(format!(
                                "unclosed `{{{name}` in the key template: close the placeholder with `}}`, \
                                 or write `{{{{` for a literal `{{`"
                            ));
                        }
                        Some(c) => name.push(c),
                    }
                }
                let field = check_placeholder(&name, owner, fields)?;
                if !literal.is_empty() {
                    segments.push(Segment::Literal(std::mem::take(&mut literal)));
                }
                segments.push(Segment::Field(field));
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        segments.push(Segment::Literal(literal));
    }
    check_separators(&segments)?;
    Ok(segments)
}

/// True for the characters the runtime always escapes in values: any ASCII
/// character except letters, digits, `_`, `-` and `.`.
fn separates(c: char) -> bool {
    c.is_ascii() && !c.is_ascii_alphanumeric() && !matches!(c, '_' | '-' | '.')
}

/// The field a placeholder names (`r#type` and `type` both name `r#type`).
fn check_placeholder(name: &str, owner: &str, fields: &[String]) -> Result<String, String> {
    if name.is_empty() {
        return Err(format!(
            "empty placeholder `{{}}` in the key template: name a field, e.g. `{{{}}}`, or write `{{{{}}}}` for literal braces",
            fields.first().map_or("id", String::as_str)
        ));
    }
    let bare = name.strip_prefix("r#").unwrap_or(name);
    if fields.iter().any(|field| field == bare) {
        return Ok(bare.to_owned());
    }
    let trimmed = bare.trim();
    let mut message = if trimmed != bare && fields.iter().any(|field| field == trimmed) {
        format!("placeholder `{{{name}}}` has spaces in it: write `{{{trimmed}}}`")
    } else if let Some((field, _)) = bare
        .split_once(':')
        .filter(|(field, _)| fields.iter().any(|f| f == field))
    {
        format!(
            "placeholder `{{{name}}}` has a format spec: write `{{{field}}}`; values are written with `Display` and escaped"
        )
    } else {
        format!("key template refers to `{{{name}}}`, but {owner} has no field `{bare}`")
    };
    if fields.is_empty() {
        message.push_str(&format!(
            "; {owner} has no fields, so its key can only be literal text"
        ));
    } else {
        message.push_str("; fields are: ");
        message.push_str(&fields.join(", "));
    }
    Err(message)
}

/// Two placeholders need a character between them that values cannot contain.
fn check_separators(segments: &[Segment]) -> Result<(), String> {
    let mut previous: Option<&str> = None;
    let mut between = "";
    for segment in segments {
        match segment {
            Segment::Literal(text) => between = text,
            Segment::Field(field) => {
                if let Some(previous) = previous
                    && !between.chars().any(separates)
                {
                    let mut message = format!(
                        "placeholders `{{{previous}}}` and `{{{field}}}` must be separated by a character such as `:` \
                         so that different values never give the same key"
                    );
                    if !between.is_empty() {
                        message.push_str(&format!(
                            " (`{between}` is not enough: letters, digits, `_`, `-` and `.` can appear in values)"
                        ));
                    }
                    return Err(message);
                }
                previous = Some(field);
                between = "";
            }
        }
    }
    Ok(())
}

/// A template to show in messages: `"cat_node:{id}"`.
pub(crate) fn example(owner: &str, fields: &[String]) -> String {
    let mut prefix = String::new();
    for (i, c) in owner.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            prefix.push('_');
        }
        prefix.extend(c.to_lowercase());
    }
    let mut example = prefix;
    for field in fields.iter().take(2) {
        example.push_str(&format!(":{{{field}}}"));
    }
    example
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    fn lit(text: &str) -> Segment {
        Segment::Literal(text.to_owned())
    }

    fn field(name: &str) -> Segment {
        Segment::Field(name.to_owned())
    }

    fn parse_ok(template: &str, names: &[&str]) -> Vec<Segment> {
        match parse(template, "CatNode", &fields(names)) {
            Ok(segments) => segments,
            Err(message) => panic!("{template:?} should parse, got: {message}"),
        }
    }

    fn parse_err(template: &str, names: &[&str]) -> String {
        match parse(template, "CatNode", &fields(names)) {
            Ok(segments) => panic!("{template:?} should not parse, got {segments:?}"),
            Err(message) => message,
        }
    }

    #[test]
    fn literal_and_placeholders() {
        assert_eq!(parse_ok("cat:{id}", &["id"]), [lit("cat:"), field("id")]);
        assert_eq!(
            parse_ok("cat:{id}:{name}/x", &["id", "name"]),
            [lit("cat:"), field("id"), lit(":"), field("name"), lit("/x")]
        );
        assert_eq!(parse_ok("{id}", &["id"]), [field("id")]);
        assert_eq!(
            parse_ok("{id}>{id}", &["id"]),
            [field("id"), lit(">"), field("id")]
        );
        assert_eq!(parse_ok("config", &[]), [lit("config")]);
        assert_eq!(parse_ok("猫:{id}", &["id"]), [lit("猫:"), field("id")]);
    }

    #[test]
    fn doubled_braces_are_literal() {
        assert_eq!(parse_ok("a{{b}}", &[]), [lit("a{b}")]);
        assert_eq!(
            parse_ok("{{{id}}}", &["id"]),
            [lit("{"), field("id"), lit("}")]
        );
        // A literal brace separates placeholders: values never contain one.
        assert_eq!(
            parse_ok("{a}{{{b}", &["a", "b"]),
            [field("a"), lit("{"), field("b")]
        );
    }

    #[test]
    fn raw_identifiers() {
        assert_eq!(parse_ok("t:{type}", &["type"]), [lit("t:"), field("type")]);
        assert_eq!(
            parse_ok("t:{r#type}", &["type"]),
            [lit("t:"), field("type")]
        );
    }

    #[test]
    fn unknown_field() {
        assert_eq!(
            parse_err("cat:{idd}", &["id", "name"]),
            "key template refers to `{idd}`, but CatNode has no field `idd`; fields are: id, name"
        );
        assert_eq!(
            parse_err("cat:{id}", &[]),
            "key template refers to `{id}`, but CatNode has no field `id`; CatNode has no fields, so its key can only be literal text"
        );
        assert!(
            parse_err("cat:{ id }", &["id"])
                .starts_with("placeholder `{ id }` has spaces in it: write `{id}`")
        );
        assert!(
            parse_err("cat:{id:?}", &["id"])
                .starts_with("placeholder `{id:?}` has a format spec: write `{id}`")
        );
    }

    #[test]
    fn placeholders_need_a_separator() {
        assert_eq!(
            parse_err("cat:{a}{b}", &["a", "b"]),
            "placeholders `{a}` and `{b}` must be separated by a character such as `:` \
             so that different values never give the same key"
        );
        for template in ["{a}-{b}", "{a}_{b}", "{a}.{b}", "{a}x1{b}", "{a}猫{b}"] {
            let message = parse_err(template, &["a", "b"]);
            assert!(message.contains("is not enough"), "{template}: {message}");
        }
        for template in [
            "{a}:{b}",
            "{a}/{b}",
            "{a}>{b}",
            "{a}|{b}",
            "{a}x:y{b}",
            "{a} {b}",
            "{a}%{b}",
        ] {
            parse_ok(template, &["a", "b"]);
        }
        // Only neighbours matter.
        assert!(parse_err("{a}:{b}{a}", &["a", "b"]).starts_with("placeholders `{b}` and `{a}`"));
    }

    #[test]
    fn malformed_templates() {
        assert!(parse_err("", &["id"]).starts_with("the key template is empty"));
        assert!(parse_err("", &["id"]).contains("\"cat_node:{id}\""));
        assert!(parse_err("cat:{id", &["id"]).starts_with("unclosed `{id`"));
        assert!(parse_err("cat:{id:{name}", &["id", "name"]).starts_with("unclosed `{id:`"));
        assert!(parse_err("cat:id}", &["id"]).starts_with("unmatched `}`"));
        assert!(parse_err("cat:{}", &["id"]).starts_with("empty placeholder `{}`"));
    }

    #[test]
    fn examples_use_the_type_name() {
        assert_eq!(
            example("CatNode", &fields(&["id", "name", "x"])),
            "cat_node:{id}:{name}"
        );
        assert_eq!(example("Config", &[]), "config");
    }
}
