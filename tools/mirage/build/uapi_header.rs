//! Lists what `include/uapi/drm/mirage_drm.h` defines, for the C probe that
//! `build.rs` compiles: every `struct drm_mirage_*` member, as `offsetof()`
//! names it, and every `DRM_MIRAGE_*` / `DRM_IOCTL_MIRAGE_*` identifier.
//!
//! It is not a C parser: it knows the shapes the header uses (plain members,
//! arrays, members of struct type, anonymous unions and structs) and refuses
//! anything else, so that a new shape fails the build instead of going
//! unchecked. `build.rs` includes this file, and so do the crate's unit tests.

/// What the header defines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// `struct drm_mirage_*` names with their members in order. A member of
    /// an anonymous union or struct is listed as a member of the enclosing
    /// struct, which is how C's `offsetof()` names it.
    pub structs: Vec<(String, Vec<String>)>,
    /// Every `DRM_MIRAGE_*` and `DRM_IOCTL_MIRAGE_*` identifier: `#define`s,
    /// enumerators and ioctl numbers alike.
    pub consts: Vec<String>,
}

/// Replaces each comment with a space.
pub fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let block = rest.find("/*");
        let line = rest.find("//");
        match (block, line) {
            (Some(b), l) if l.is_none_or(|l| b < l) => {
                out.push_str(&rest[..b]);
                out.push(' ');
                rest = rest[b + 2..]
                    .find("*/")
                    .map_or("", |e| &rest[b + 2 + e + 2..]);
            }
            (_, Some(l)) => {
                out.push_str(&rest[..l]);
                rest = rest[l..].find('\n').map_or("", |e| &rest[l + e..]);
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Lists the structs and constants of `text`, which has no comments left.
pub fn parse_header(text: &str) -> Result<Parsed, String> {
    let mut consts: Vec<String> = Vec::new();
    for word in text.split(|c: char| !is_ident(c)) {
        if (word.starts_with("DRM_MIRAGE_") || word.starts_with("DRM_IOCTL_MIRAGE_"))
            && !consts.iter().any(|c| c == word)
        {
            consts.push(word.to_string());
        }
    }

    let mut structs = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("struct drm_mirage_") {
        let after = &rest[at + "struct ".len()..];
        let name_len = after.find(|c: char| !is_ident(c)).unwrap_or(after.len());
        let name = &after[..name_len];
        rest = &after[name_len..];
        // Only definitions, `struct drm_mirage_x {`; uses are skipped.
        let Some(body) = rest.trim_start().strip_prefix('{') else {
            continue;
        };
        let end = closing_brace(body).ok_or_else(|| format!("struct {name}: no closing brace"))?;
        let mut fields = Vec::new();
        members(&body[..end], &mut fields).map_err(|e| format!("struct {name}: {e}"))?;
        structs.push((name.to_string(), fields));
        rest = &body[end + 1..];
    }
    Ok(Parsed { structs, consts })
}

/// The index in `body` of the `}` that closes the brace opened just before it.
fn closing_brace(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Appends the member names declared in `body` (a struct's or union's
/// braces, exclusive) to `out`, flattening anonymous unions and structs.
fn members(body: &str, out: &mut Vec<String>) -> Result<(), String> {
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let decl_end = rest
            .find([';', '{'])
            .ok_or_else(|| format!("member `{}` has no `;`", rest.trim()))?;
        if rest.as_bytes()[decl_end] == b';' {
            out.push(member_name(&rest[..decl_end])?);
            rest = rest[decl_end + 1..].trim_start();
            continue;
        }
        // An aggregate defined inline: only anonymous ones, whose members
        // C names as members of the enclosing struct, are understood.
        let head = rest[..decl_end].trim();
        if head != "union" && head != "struct" {
            return Err(format!(
                "`{head} {{`: only anonymous unions and structs are understood; \
                 teach tools/mirage/build/uapi_header.rs"
            ));
        }
        let inner = &rest[decl_end + 1..];
        let close = closing_brace(inner).ok_or_else(|| format!("{head}: no closing brace"))?;
        let tail = inner[close + 1..].trim_start();
        // `struct { ... } name;`: a member of an unnamed struct type, whose
        // members `offsetof()` names `name.member`.
        let (prefix, tail) = match tail.strip_prefix(';') {
            Some(t) => (None, t),
            None => {
                let decl = tail.split(';').next().unwrap_or("").trim();
                let named = head == "struct"
                    && !decl.is_empty()
                    && decl.chars().all(is_ident)
                    && tail.len() > decl.len();
                if !named {
                    return Err(format!(
                        "a named inline {head} (`}} {decl}`): only anonymous ones and \
                         members of unnamed struct type are understood; \
                         teach tools/mirage/build/uapi_header.rs"
                    ));
                }
                let after = tail[tail.find(';').unwrap_or(tail.len() - 1) + 1..].trim_start();
                (Some(decl), after)
            }
        };
        let before = out.len();
        members(&inner[..close], out)?;
        if out.len() == before {
            return Err(format!("an empty anonymous {head}"));
        }
        if let Some(p) = prefix {
            for m in &mut out[before..] {
                *m = format!("{p}.{m}");
            }
        }
        rest = tail.trim_start();
    }
    Ok(())
}

/// The name a member declaration (`__u64 reserved[2]`,
/// `struct drm_mirage_vm_bind_op bind`) declares.
fn member_name(decl: &str) -> Result<String, String> {
    let decl = decl.trim();
    if decl.contains([',', '(', ':']) {
        return Err(format!(
            "member `{decl}`: several declarators, function pointers and bit-fields \
             are not understood"
        ));
    }
    let decl = decl.split('[').next().unwrap_or(decl).trim_end();
    decl.rsplit(|c: char| !is_ident(c))
        .next()
        .filter(|f| !f.is_empty() && decl.len() > f.len())
        .map(str::to_string)
        .ok_or_else(|| format!("cannot parse member `{decl}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Parsed, String> {
        parse_header(&strip_comments(text))
    }

    fn fields<'a>(p: &'a Parsed, name: &str) -> Option<&'a [String]> {
        p.structs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f.as_slice())
    }

    #[test]
    fn the_header_lists_every_struct_and_union_member() {
        let p = parse(include_str!("../../../include/uapi/drm/mirage_drm.h"))
            .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = p.structs.iter().map(|(n, _)| n.as_str()).collect();
        // Every definition, not only the first one.
        assert_eq!(
            names,
            [
                "drm_mirage_get_param",
                "drm_mirage_gem_create",
                "drm_mirage_gem_mmap_offset",
                "drm_mirage_vm_create",
                "drm_mirage_vm_destroy",
                "drm_mirage_vm_bind_op",
                "drm_mirage_sync",
                "drm_mirage_vm_bind",
                "drm_mirage_exec_queue_create",
                "drm_mirage_exec_queue_destroy",
                "drm_mirage_exec",
                "drm_mirage_vm_get_state",
                "drm_mirage_madvise",
                "drm_mirage_mem_range_attr",
                "drm_mirage_vm_query_mem_range_attr",
            ]
        );
        assert_eq!(
            fields(&p, "drm_mirage_madvise").map(|f| &f[5..9]),
            Some(
                &[
                    "preferred_mem_loc.devmem_fd",
                    "preferred_mem_loc.migration_policy",
                    "preferred_mem_loc.region_instance",
                    "preferred_mem_loc.reserved",
                ]
                .map(String::from)[..]
            )
        );
        assert_eq!(
            fields(&p, "drm_mirage_vm_bind_op").map(|f| &f[3..7]),
            Some(&["pad", "obj_offset", "userptr", "cpu_addr_mirror_offset"].map(String::from)[..])
        );
        assert_eq!(
            fields(&p, "drm_mirage_vm_bind").map(|f| &f[4..7]),
            Some(&["num_binds", "bind", "vector_of_binds"].map(String::from)[..])
        );
        for c in [
            "DRM_MIRAGE_VM_BIND",
            "DRM_MIRAGE_PAT_UC",
            "DRM_MIRAGE_VM_BIND_FLAG_NOEXEC",
            "DRM_IOCTL_MIRAGE_VM_GET_STATE",
        ] {
            assert!(p.consts.iter().any(|k| k == c), "{c} not listed");
        }
    }

    #[test]
    fn anonymous_aggregates_are_flattened() {
        let p = parse(
            "struct drm_mirage_x { __u32 a; union { __u64 b; struct { __u32 c; __u32 d[2]; }; \
             struct drm_mirage_y e; }; __u64 f; };\n\
             struct drm_mirage_y { __u64 g; };\n\
             void f(struct drm_mirage_x *x);",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let expect =
            |n: &str, f: &[&str]| (n.to_string(), f.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            p.structs,
            vec![
                expect("drm_mirage_x", &["a", "b", "c", "d", "e", "f"]),
                expect("drm_mirage_y", &["g"]),
            ]
        );
    }

    #[test]
    fn members_of_unnamed_struct_type_are_prefixed() {
        let p = parse(
            "struct drm_mirage_x { __u32 a; union { struct { __u32 b; __u16 c[2]; } s; \
             struct { __u64 d; } t; }; struct { __u32 e; } u; __u64 f; };",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let f = fields(&p, "drm_mirage_x").unwrap_or_default();
        assert_eq!(f, ["a", "s.b", "s.c", "t.d", "u.e", "f"].map(String::from));
    }

    #[test]
    fn unknown_shapes_are_refused() {
        for (text, why) in [
            (
                "struct drm_mirage_x { union { __u64 a; } u; };",
                "named inline union",
            ),
            (
                "struct drm_mirage_x { struct { __u64 a; } b, c; };",
                "two declarators of an unnamed struct",
            ),
            (
                "struct drm_mirage_x { struct drm_mirage_y { __u64 a; } b; };",
                "named struct",
            ),
            ("struct drm_mirage_x { __u32 a : 3; };", "bit-field"),
            ("struct drm_mirage_x { __u32 a, b; };", "two declarators"),
            ("struct drm_mirage_x { __u32 a; ", "no closing brace"),
            ("struct drm_mirage_x { union { }; };", "empty union"),
        ] {
            assert!(parse(text).is_err(), "{why} accepted");
        }
    }
}
