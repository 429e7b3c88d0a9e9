//! The one escaping path for text placed in the HTML and SVG that runs publish (report pages,
//! funnel charts): `&`, `<`, `>` and `"` become entities, so text is safe in content and attributes.

/// Escapes text for HTML or SVG content and double-quoted attributes.
pub fn esc(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escapes_markup_and_quotes_and_keeps_the_rest() {
        assert_eq!(esc(r#"<b>"R&D"</b> · it's"#), "&lt;b&gt;&quot;R&amp;D&quot;&lt;/b&gt; · it's");
        assert_eq!(esc("&amp;"), "&amp;amp;");
    }
}
