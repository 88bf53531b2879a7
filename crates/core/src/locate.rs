//! Finds the line of a key in a YAML document, so that errors found after parsing (a mode a
//! sync's object does not support, a column its model lacks) still point into the file.
//!
//! It reads block mappings by indentation and looks into flow mappings (`{a: 1, b: 2}`) on the
//! line of their parent key: the shapes a `sallyport.yaml` takes.

/// The 1-based line of the key at `path`, or of the deepest ancestor that can be found.
pub fn line_of(src: &str, path: &[&str]) -> Option<usize> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut best: Option<(usize, usize)> = None; // (matched depth, line)
    for (i, raw) in src.lines().enumerate() {
        let line_no = i + 1;
        let content = strip_comment(raw);
        if content.trim().is_empty() || content.trim_start().starts_with("- ") {
            continue;
        }
        let indent = content.len() - content.trim_start().len();
        let Some(key) = leading_key(content.trim_start()) else {
            continue;
        };
        while stack.last().is_some_and(|(d, _)| *d >= indent) {
            stack.pop();
        }
        stack.push((indent, key));
        let depth = stack
            .iter()
            .zip(path)
            .take_while(|((_, k), p)| k == *p)
            .count();
        if depth == stack.len() {
            if depth == path.len() {
                return Some(line_no);
            }
            // The rest of the path may sit in a flow mapping on this line.
            let rest = &path[depth..];
            if flow_has_keys(content, rest) {
                return Some(line_no);
            }
            if best.is_none_or(|(d, _)| depth > d) {
                best = Some((depth, line_no));
            }
        }
    }
    best.map(|(_, l)| l)
}

fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev.is_whitespace() => return &line[..i],
            None => {}
        }
        prev = c;
    }
    line
}

fn leading_key(s: &str) -> Option<String> {
    let (key, rest) = if let Some(stripped) = s.strip_prefix('"') {
        let end = stripped.find('"')?;
        (stripped[..end].to_string(), &stripped[end + 1..])
    } else if let Some(stripped) = s.strip_prefix('\'') {
        let end = stripped.find('\'')?;
        (stripped[..end].to_string(), &stripped[end + 1..])
    } else {
        let end = s.find(':')?;
        (s[..end].trim_end().to_string(), &s[end..])
    };
    let rest = rest.trim_start();
    (rest.starts_with(':') && (rest.len() == 1 || rest[1..].starts_with(char::is_whitespace)))
        .then_some(key)
}

fn flow_has_keys(line: &str, keys: &[&str]) -> bool {
    let Some(start) = line.find('{') else {
        return false;
    };
    let mut rest = &line[start..];
    for k in keys {
        let needles = [format!("{k}:"), format!("\"{k}\":"), format!("'{k}':")];
        let found = needles
            .iter()
            .filter_map(|n| {
                rest.match_indices(n.as_str())
                    .find(|(i, _)| {
                        rest[..*i]
                            .chars()
                            .last()
                            .is_none_or(|c| c == '{' || c == ',' || c.is_whitespace())
                    })
                    .map(|(i, _)| i + n.len())
            })
            .min();
        match found {
            Some(end) => rest = &rest[end..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
state: sallyport.db # comment
warehouses:
  analytics: {type: postgres, url: \"${WAREHOUSE_URL}\"}
syncs:
  people:
    warehouse: analytics
    model: {sql: \"select 1 # not a comment\"}
    mapping:
      auto: true
      fields: {plan: plan_name}
  other:
    mode: insert
";

    #[test]
    fn finds_block_and_flow_keys() {
        assert_eq!(line_of(DOC, &["state"]), Some(1));
        assert_eq!(line_of(DOC, &["warehouses", "analytics", "url"]), Some(3));
        assert_eq!(line_of(DOC, &["syncs", "people", "model", "sql"]), Some(7));
        assert_eq!(
            line_of(DOC, &["syncs", "people", "mapping", "fields", "plan"]),
            Some(10)
        );
        assert_eq!(line_of(DOC, &["syncs", "other", "mode"]), Some(12));
    }

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        assert_eq!(line_of(DOC, &["syncs", "people", "primary_key"]), Some(5));
        assert_eq!(line_of(DOC, &["nothing"]), None);
    }
}
