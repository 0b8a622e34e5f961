//! Name resolution across a process group's memsegs: a name resolves to exactly one
//! object of the primary's choosing.
//!
//! - `NAME` is looked up in the primary's own memsegs only (not the IVSHMEM export
//!   segments, whose memzone tables a guest can rewrite), and must be in exactly one.
//! - `NAME@MEMSEG` is looked up in that memseg only: the one way to reach an export
//!   group's objects (`vm1_rx@vm1`), written as the primary's `--ring NAME=N@MEMSEG`.
//!
//! Each memseg's table is validated as a whole ([`Memseg::memzones`]): a duplicate name
//! or overlapping entries make it an error, never a first match.

use crate::{Error, Memseg, Memzone, Result};

/// Splits `NAME@MEMSEG` at its last `@`; a plain name has no memseg.
pub fn split_qualified(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once('@') {
        Some((obj, seg)) if !obj.is_empty() && !seg.is_empty() => (obj, Some(seg)),
        _ => (name, None),
    }
}

/// Resolves `name` among `segs` (each memseg with whether it is an export segment), by
/// the rules in the module docs.
///
/// # Errors
/// [`Error::NotFound`] (naming, when there are export segments, how to reach them);
/// [`Error::BadMemseg`] when a table searched is corrupt or the name is in two of the
/// primary's memsegs.
pub fn resolve<'a>(
    segs: impl IntoIterator<Item = (&'a Memseg, bool)> + Clone,
    name: &str,
) -> Result<Memzone> {
    let (obj, seg) = split_qualified(name);
    if let Some(seg) = seg {
        let m = segs
            .into_iter()
            .find(|(m, _)| m.name() == seg)
            .ok_or_else(|| Error::NotFound(format!("{name} (there is no memseg {seg})")))?;
        return m.0.lookup(obj).map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound(name.to_string()),
            other => other,
        });
    }
    let mut found: Option<(Memzone, &str)> = None;
    for (m, _) in segs.clone().into_iter().filter(|(_, exported)| !exported) {
        match m.lookup(obj) {
            Ok(z) => {
                if let Some((_, first)) = &found {
                    return Err(Error::BadMemseg(format!(
                        "{name} is in memsegs {first} and {}: names must be unique",
                        m.name()
                    )));
                }
                found = Some((z, m.name()));
            }
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if let Some((z, _)) = found {
        return Ok(z);
    }
    let exports: Vec<&str> = segs
        .into_iter()
        .filter(|(_, exported)| *exported)
        .map(|(m, _)| m.name())
        .collect();
    Err(Error::NotFound(if exports.is_empty() {
        name.to_string()
    } else {
        format!(
            "{name} in the primary's own memsegs (an export group's objects are named NAME@GROUP, e.g. {name}@{})",
            exports[0]
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemzoneKind, Region};

    fn seg(name: &str) -> Memseg {
        let s = Memseg::create_in_region(Region::heap(1 << 20), name, 1).unwrap();
        s.mark_ready();
        s
    }

    /// Another process's view (reads the shared table).
    fn view(s: &Memseg) -> Memseg {
        Memseg::from_region(s.region().clone()).unwrap()
    }

    #[test]
    fn qualified_names_split_at_the_last_at() {
        assert_eq!(split_qualified("vm1_rx@vm1"), ("vm1_rx", Some("vm1")));
        assert_eq!(split_qualified("a@b@c"), ("a@b", Some("c")));
        assert_eq!(split_qualified("plain"), ("plain", None));
        assert_eq!(split_qualified("@x"), ("@x", None));
        assert_eq!(split_qualified("x@"), ("x@", None));
    }

    #[test]
    fn a_plain_name_never_resolves_into_an_export_segment() {
        let (main, vm1) = (seg("main"), seg("vm1"));
        main.reserve("r", 4096, 64, MemzoneKind::Ring).unwrap();
        vm1.reserve("vm1_rx", 4096, 64, MemzoneKind::Ring).unwrap();
        // The guest adds an entry named like the primary's ring to its own segment.
        let guest = view(&vm1);
        guest.region().write(128 + 64, &guest_entry("r")).unwrap();
        let count = guest
            .region()
            .atomic_u32(crate::layout::ZONE_COUNT_OFF)
            .unwrap();
        count.store(2, std::sync::atomic::Ordering::Release);
        let (m, v) = (view(&main), view(&vm1));
        // Export first in the list, to be sure order does not matter.
        let segs = [(&v, true), (&m, false)];
        let z = resolve(segs, "r").unwrap();
        assert_eq!(z.offset, main.lookup("r").unwrap().offset);
        assert_eq!(
            z.region().base_va(),
            m.region().base_va(),
            "the primary's memseg"
        );
        // Export objects only through their export.
        let e = resolve(segs, "vm1_rx").unwrap_err();
        assert!(e.to_string().contains("vm1_rx@vm1"), "{e}");
        assert!(resolve(segs, "vm1_rx@vm1").is_ok());
        assert!(matches!(
            resolve(segs, "vm1_rx@vm9"),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn a_name_in_two_of_the_primarys_memsegs_is_an_error() {
        let (a, b) = (seg("a"), seg("b"));
        a.reserve("x", 64, 64, MemzoneKind::Raw).unwrap();
        b.reserve("x", 64, 64, MemzoneKind::Raw).unwrap();
        let e = resolve([(&a, false), (&b, false)], "x").unwrap_err();
        assert!(e.to_string().contains("memsegs a and b"), "{e}");
        assert!(resolve([(&a, false), (&b, false)], "x@b").is_ok());
    }

    fn guest_entry(name: &str) -> crate::layout::MemzoneEntry {
        crate::layout::MemzoneEntry {
            name: crate::layout::encode_name(name).unwrap(),
            offset: 1 << 19,
            len_bytes: 4096,
            align: 64,
            flags: MemzoneKind::Ring.as_u32(),
            _reserved: 0,
        }
    }
}
