//! The catalogue format's reader: `[[...]]` tables of `key = value` lines, each key with its line,
//! and typed access to a table's fields with their range rules.

use super::*;

/// A parsed value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Int(u64),
    Str(String),
    Bool(bool),
    Ints(Vec<u64>),
}

impl Value {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::Str(_) => "a string",
            Value::Bool(_) => "a boolean",
            Value::Ints(_) => "an array of integers",
        }
    }
}

/// One `[[...]]` table with its keys and the lines they are on.
#[derive(Debug, Default)]
pub(super) struct Table {
    pub(super) line: usize,
    pub(super) keys: Vec<(String, Value, usize)>,
}

#[derive(Debug, Default)]
pub(super) struct GpuTables {
    pub(super) gpu: Table,
    pub(super) products: Vec<Table>,
    pub(super) profiles: Vec<Table>,
}

pub(super) fn line_of(t: &Table, key: &str) -> usize {
    t.keys.iter().find(|(k, _, _)| k == key).map_or(t.line, |(_, _, l)| *l)
}

/// Split the text into `[[gpu]]` tables with their products and profiles; check `version`.
pub(super) fn tables(ctx: &Ctx, text: &str) -> Result<Vec<GpuTables>, CatalogueError> {
    use CatalogueErrorKind as K;
    #[derive(PartialEq)]
    enum At {
        Top,
        Gpu,
        Product,
        Profile,
    }
    let mut at = At::Top;
    let mut version_seen = false;
    let mut gpus: Vec<GpuTables> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            if !version_seen {
                return Err(ctx.err(n, "version", K::Version, format!("the file must begin with `version = {VERSION}`")));
            }
            let header = line.replace(' ', "");
            at = match header.as_str() {
                "[[gpu]]" => {
                    if gpus.len() >= MAX_GPUS {
                        return Err(ctx.err(n, "gpu", K::Invalid, format!("more than {MAX_GPUS} GPU types in one file")));
                    }
                    gpus.push(GpuTables { gpu: Table { line: n, keys: Vec::new() }, ..Default::default() });
                    At::Gpu
                }
                "[[gpu.product]]" | "[[gpu.profile]]" => {
                    let Some(g) = gpus.last_mut() else {
                        return Err(ctx.err(n, header.trim_matches(['[', ']']), K::Syntax, "comes before any [[gpu]]"));
                    };
                    if header == "[[gpu.product]]" {
                        if g.products.len() >= MAX_PRODUCTS {
                            return Err(ctx.err(n, "gpu.product", K::Invalid, format!("more than {MAX_PRODUCTS} products")));
                        }
                        g.products.push(Table { line: n, keys: Vec::new() });
                        At::Product
                    } else {
                        if g.profiles.len() >= MAX_PROFILES {
                            return Err(ctx.err(n, "gpu.profile", K::Invalid, format!("more than {MAX_PROFILES} profiles")));
                        }
                        g.profiles.push(Table { line: n, keys: Vec::new() });
                        At::Profile
                    }
                }
                _ => {
                    return Err(ctx.err(n, line, K::UnknownKey, "unknown table; a catalogue has [[gpu]], [[gpu.product]] and [[gpu.profile]]"));
                }
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ctx.err(n, line, K::Syntax, "expected `key = value`"));
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ctx.err(n, key, K::Syntax, "a key is letters, digits and `_`"));
        }
        let (prefix, table) = match at {
            At::Top => ("", None),
            At::Gpu => ("gpu.", gpus.last_mut().map(|g| &mut g.gpu)),
            At::Product => ("gpu.product.", gpus.last_mut().and_then(|g| g.products.last_mut())),
            At::Profile => ("gpu.profile.", gpus.last_mut().and_then(|g| g.profiles.last_mut())),
        };
        let field = format!("{prefix}{key}");
        let value = parse_value(value.trim()).map_err(|m| ctx.err(n, &field, K::Syntax, m))?;
        match table {
            None => {
                if key != "version" {
                    return Err(ctx.err(n, &field, K::UnknownKey, "unknown key; before the first [[gpu]] only `version` is allowed"));
                }
                if version_seen {
                    return Err(ctx.err(n, "version", K::DuplicateKey, "given twice"));
                }
                match value {
                    Value::Int(v) if v == VERSION as u64 => version_seen = true,
                    Value::Int(v) => {
                        return Err(ctx.err(n, "version", K::Version, format!("version {v} is not one this parva reads (it reads {VERSION})")));
                    }
                    v => return Err(ctx.err(n, "version", K::Version, format!("must be an integer, not {}", v.kind()))),
                }
            }
            Some(t) => {
                if let Some((_, _, l)) = t.keys.iter().find(|(k, _, _)| k == key) {
                    return Err(ctx.err(n, &field, K::DuplicateKey, format!("given twice (also line {l})")));
                }
                t.keys.push((key.to_string(), value, n));
            }
        }
    }
    if !version_seen {
        return Err(ctx.err(0, "version", K::Version, format!("missing: the file must begin with `version = {VERSION}`")));
    }
    if gpus.is_empty() {
        return Err(ctx.err(0, "gpu", K::Missing, "no [[gpu]] table"));
    }
    Ok(gpus)
}

/// The line without a `#` comment (a `#` inside a string is kept).
pub(super) fn strip_comment(line: &str) -> &str {
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            '\\' if in_str && !escaped => {
                escaped = true;
                continue;
            }
            '"' if !escaped => in_str = !in_str,
            '#' if !in_str => return &line[..i],
            _ => {}
        }
        escaped = false;
    }
    line
}

pub(super) fn parse_int(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let clean = s.replace('_', "");
    let parsed = match clean.strip_prefix("0x").or_else(|| clean.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => clean.parse::<u64>(),
    };
    parsed.map_err(|_| format!("`{s}` is not a non-negative integer"))
}

pub(super) fn parse_value(s: &str) -> Result<Value, String> {
    if let Some(body) = s.strip_prefix('"') {
        let Some(body) = body.strip_suffix('"') else { return Err(format!("unterminated string `{s}`")) };
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    other => return Err(format!("unsupported escape `\\{}` in a string", other.map_or(String::new(), String::from))),
                },
                '"' => return Err(format!("a `\"` inside a string must be written `\\\"`: `{s}`")),
                c => out.push(c),
            }
            if out.len() > MAX_TEXT {
                return Err(format!("a string has at most {MAX_TEXT} bytes"));
            }
        }
        return Ok(Value::Str(out));
    }
    if let Some(body) = s.strip_prefix('[') {
        let Some(body) = body.strip_suffix(']') else { return Err(format!("an array is written on one line: `{s}`")) };
        let body = body.trim().trim_end_matches(',');
        if body.trim().is_empty() {
            return Ok(Value::Ints(Vec::new()));
        }
        let items: Vec<&str> = body.split(',').collect();
        if items.len() > MAX_SLICES as usize {
            return Err(format!("an array has at most {MAX_SLICES} items"));
        }
        return items.iter().map(|i| parse_int(i)).collect::<Result<Vec<_>, _>>().map(Value::Ints);
    }
    match s {
        "true" => Ok(Value::Bool(true)),
        "false" => Ok(Value::Bool(false)),
        "" => Err("a value is missing".into()),
        _ => parse_int(s).map(Value::Int).map_err(|_| format!("`{s}` is not an integer, a \"string\", true/false or [integers]")),
    }
}

/// Typed access to one table's keys, refusing unknown ones.
pub(super) struct Fields<'a> {
    pub(super) ctx: &'a Ctx<'a>,
    pub(super) table: &'a Table,
    pub(super) prefix: &'static str,
}

impl<'a> Fields<'a> {
    pub(super) fn new(ctx: &'a Ctx<'a>, table: &'a Table, prefix: &'static str, known: &[&str]) -> Result<Self, CatalogueError> {
        if let Some((k, _, l)) = table.keys.iter().find(|(k, _, _)| !known.contains(&k.as_str())) {
            return Err(ctx.err(*l, &format!("{prefix}.{k}"), CatalogueErrorKind::UnknownKey, format!("unknown key; [[{prefix}]] has {}", known.join(", "))));
        }
        Ok(Fields { ctx, table, prefix })
    }

    pub(super) fn field(&self, key: &str) -> String {
        format!("{}.{key}", self.prefix)
    }

    pub(super) fn get(&self, key: &str) -> Option<(&'a Value, usize)> {
        self.table.keys.iter().find(|(k, _, _)| k == key).map(|(_, v, l)| (v, *l))
    }

    pub(super) fn line(&self, key: &str) -> usize {
        self.get(key).map_or(self.table.line, |(_, l)| l)
    }

    pub(super) fn required(&self, key: &str) -> Result<(&'a Value, usize), CatalogueError> {
        self.get(key).ok_or_else(|| {
            self.ctx.err(self.table.line, &self.field(key), CatalogueErrorKind::Missing, format!("[[{}]] needs `{key}`", self.prefix))
        })
    }

    pub(super) fn wrong(&self, key: &str, line: usize, want: &str, v: &Value) -> CatalogueError {
        self.ctx.err(line, &self.field(key), CatalogueErrorKind::Invalid, format!("must be {want}, not {}", v.kind()))
    }

    pub(super) fn int(&self, key: &str, lo: u64, hi: u64) -> Result<u64, CatalogueError> {
        let (v, l) = self.required(key)?;
        match v {
            Value::Int(i) if (lo..=hi).contains(i) => Ok(*i),
            Value::Int(i) => Err(self.ctx.err(l, &self.field(key), CatalogueErrorKind::Invalid, format!("{i} is out of range {lo}..={hi}"))),
            v => Err(self.wrong(key, l, "an integer", v)),
        }
    }

    pub(super) fn text(&self, key: &str) -> Result<String, CatalogueError> {
        let (v, l) = self.required(key)?;
        match v {
            Value::Str(s) if !s.trim().is_empty() => Ok(s.clone()),
            Value::Str(_) => Err(self.ctx.err(l, &self.field(key), CatalogueErrorKind::Invalid, "must not be empty")),
            v => Err(self.wrong(key, l, "a string", v)),
        }
    }

    pub(super) fn opt_text(&self, key: &str) -> Result<Option<String>, CatalogueError> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        self.text(key).map(Some)
    }

    pub(super) fn opt_bool(&self, key: &str) -> Result<bool, CatalogueError> {
        match self.get(key) {
            None => Ok(false),
            Some((Value::Bool(b), _)) => Ok(*b),
            Some((v, l)) => Err(self.wrong(key, l, "true or false", v)),
        }
    }

    pub(super) fn ints(&self, key: &str) -> Result<(Vec<u64>, usize), CatalogueError> {
        let (v, l) = self.required(key)?;
        match v {
            Value::Ints(i) => Ok((i.clone(), l)),
            v => Err(self.wrong(key, l, "an array of integers", v)),
        }
    }
}
