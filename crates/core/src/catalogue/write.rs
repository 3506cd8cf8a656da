//! Catalogue files written from GPU types (`parva catalogue`, `--from-gpu`): what the reader reads
//! back.

use super::*;

/// `s` as a TOML basic string.
pub(super) fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Catalogue text for `types` (what [`parse`] reads back to the same types), after `header`
/// (written as `#` comment lines).
pub fn to_text(types: &[&GpuType], header: &str) -> String {
    use fmt::Write as _;
    let mut s = String::new();
    for l in header.lines() {
        let _ = if l.trim().is_empty() { writeln!(s, "#") } else { writeln!(s, "# {}", l.trim_end()) };
    }
    let _ = writeln!(s, "version = {VERSION}");
    for g in types {
        let _ = writeln!(s, "\n[[gpu]]");
        let _ = writeln!(s, "id = {}", quoted(g.id));
        if g.is_mps() {
            let whole = g.profile_for_size(g.gpcs);
            let _ = writeln!(s, "partition = \"mps\"");
            let _ = writeln!(s, "sms = {}", whole.map_or(0, |p| p.sms));
            let _ = writeln!(s, "mem_gb = {}", whole.map_or(0, |p| p.mem_gb));
            if let Some(w) = whole.filter(|w| w.mem_source != MemSource::Assumed) {
                let _ = writeln!(s, "mem_mib = {}", w.mem_mib);
            }
            let _ = writeln!(s, "max_instances = {}", g.max_instances);
            if let Some(src) = g.source {
                let _ = writeln!(s, "source = {}", quoted(src));
            }
            write_products(&mut s, g);
            continue;
        }
        let _ = writeln!(s, "gpcs = {}", g.gpcs);
        let _ = writeln!(s, "mem_slices = {}", g.mem_slices);
        let _ = writeln!(s, "max_instances = {}", g.max_instances);
        let _ = writeln!(s, "placements_source = {}", quoted(g.placements_source.as_str()));
        if let Some(src) = g.source {
            let _ = writeln!(s, "source = {}", quoted(src));
        }
        write_products(&mut s, g);
        for p in g.profiles {
            let starts: Vec<String> = p.starts.iter().map(u8::to_string).collect();
            let _ = writeln!(s, "\n[[gpu.profile]]");
            let _ = writeln!(s, "id = {}", p.id);
            let _ = writeln!(s, "name = {}", quoted(p.name));
            let _ = writeln!(s, "gpcs = {}", p.gpcs);
            let _ = writeln!(s, "mem_slices = {}", p.mem_slices);
            let _ = writeln!(s, "mem_gb = {}", p.mem_gb);
            let _ = writeln!(s, "mem_mib = {}", p.mem_mib);
            let _ = writeln!(s, "mem_source = {}", quoted(p.mem_source.as_str()));
            let _ = writeln!(s, "sms = {}", p.sms);
            let _ = writeln!(s, "max_count = {}", p.max_count);
            let _ = writeln!(s, "placements = [{}]", starts.join(", "));
            if p.media_extensions {
                let _ = writeln!(s, "media_extensions = true");
            }
        }
    }
    s
}

pub(super) fn write_products(s: &mut String, g: &GpuType) {
    use fmt::Write as _;
    for p in g.products {
        let _ = writeln!(s, "\n[[gpu.product]]");
        let _ = writeln!(s, "name = {}", quoted(p.name));
        let _ = writeln!(s, "pci_device_id = {}", crate::mig::pci_id_text(p.pci_device_id));
    }
}

