//! The kernel's BTF → the struct field offsets the BTF-enabled raw tracepoint programs read.
//!
//! Those programs (`tp_btf`) get a tracepoint's raw arguments, so what the classic record would
//! carry (`expires`, `function`, a task's `pid`) they read from the structs. Layouts differ
//! across kernels, versions and configs (and `task_struct` is reordered by randstruct), so, as
//! for the `format` files, nothing here hard-codes an offset: each comes from the running
//! kernel's own type information, or the classic path is taken.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use btf_rs::{Btf, Type};
use timerwatch_common::KernelOffsets;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn open(path: &Path) -> Result<Self> {
        let btf = Btf::from_file(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Self { btf })
    }

    /// Whether the kernel has a BTF-enabled raw tracepoint of this name.
    pub fn has_tracepoint(&self, name: &str) -> bool {
        self.btf
            .resolve_ids_by_name(&format!("btf_trace_{name}"))
            .is_ok_and(|ids| !ids.is_empty())
    }

    /// Byte offset of `path` (members separated by dots; an array member steps into its first
    /// element) inside `struct ty`.
    pub fn offset(&self, ty: &str, path: &str) -> Result<u32> {
        let types = self
            .btf
            .resolve_types_by_name(ty)
            .map_err(|e| anyhow!("struct {ty}: {e}"))?;
        let mut cur = types
            .into_iter()
            .find(|t| matches!(t, Type::Struct(_)))
            .ok_or_else(|| anyhow!("the kernel's BTF has no struct {ty}"))?;
        let mut off = 0u32;
        for name in path.split('.') {
            let (at, ty) = self
                .member(&cur, name)?
                .ok_or_else(|| anyhow!("struct {ty} has no member `{path}` on this kernel"))?;
            off += at;
            cur = ty;
        }
        Ok(off)
    }

    /// `name` in a struct or union (looking into anonymous members, as C does): its byte
    /// offset and its type with typedefs, qualifiers and arrays peeled off.
    fn member(&self, container: &Type, name: &str) -> Result<Option<(u32, Type)>> {
        let members = match container {
            Type::Struct(s) | Type::Union(s) => &s.members,
            _ => bail!(
                "`{name}` is looked up in a {}, not a struct",
                container.name()
            ),
        };
        for m in members {
            let bits = m.bit_offset();
            if m.bitfield_size().unwrap_or(0) != 0 || bits % 8 != 0 {
                continue;
            }
            let here = bits / 8;
            let ty = self.peel(self.btf.resolve_chained_type(m)?)?;
            let m_name = self.btf.resolve_name(m).unwrap_or_default();
            if m_name == name {
                return Ok(Some((here, ty)));
            }
            if m_name.is_empty() && matches!(ty, Type::Struct(_) | Type::Union(_)) {
                if let Some((at, t)) = self.member(&ty, name)? {
                    return Ok(Some((here + at, t)));
                }
            }
        }
        Ok(None)
    }

    fn peel(&self, mut ty: Type) -> Result<Type> {
        loop {
            ty = match &ty {
                Type::Typedef(t) => self.btf.resolve_chained_type(t)?,
                Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => {
                    self.btf.resolve_chained_type(t)?
                }
                Type::TypeTag(t) => self.btf.resolve_chained_type(t)?,
                Type::Array(a) => self.btf.resolve_chained_type(a)?,
                _ => return Ok(ty),
            };
        }
    }

    pub fn offsets(&self) -> Result<KernelOffsets> {
        let at = |ty: &str, path: &str| self.offset(ty, path);
        Ok(KernelOffsets {
            hrtimer_expires: at("hrtimer", "node.expires")?,
            hrtimer_softexpires: at("hrtimer", "_softexpires")?,
            hrtimer_function: at("hrtimer", "function")?,
            timer_list_expires: at("timer_list", "expires")?,
            timer_list_function: at("timer_list", "function")?,
            timer_list_flags: at("timer_list", "flags")?,
            task_pid: at("task_struct", "pid")?,
            task_tgid: at("task_struct", "tgid")?,
            itimerspec_value_sec: at("itimerspec64", "it_value.tv_sec")?,
            itimerspec_value_nsec: at("itimerspec64", "it_value.tv_nsec")?,
            itimerspec_interval_sec: at("itimerspec64", "it_interval.tv_sec")?,
            itimerspec_interval_nsec: at("itimerspec64", "it_interval.tv_nsec")?,
            pid_nr: at("pid", "numbers.nr")?,
            _pad: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF, which every supported kernel here has.
    fn kernel() -> KernelBtf {
        KernelBtf::open(Path::new(VMLINUX_BTF)).expect("this kernel exports BTF")
    }

    #[test]
    fn nested_members_add_up() {
        let k = kernel();
        let node = k.offset("hrtimer", "node").unwrap();
        let in_node = k.offset("timerqueue_node", "expires").unwrap();
        assert_eq!(k.offset("hrtimer", "node.expires").unwrap(), node + in_node);
        // it_interval comes first in struct itimerspec64.
        let value = k.offset("itimerspec64", "it_value").unwrap();
        let nsec = k.offset("timespec64", "tv_nsec").unwrap();
        assert_eq!(
            k.offset("itimerspec64", "it_value.tv_nsec").unwrap(),
            value + nsec
        );
        assert_ne!(value, 0);
    }

    #[test]
    fn unknown_struct_or_member_is_an_error_naming_it() {
        let k = kernel();
        let e = k
            .offset("hrtimer", "no_such_field")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no_such_field"), "{e}");
        let e = k.offset("no_such_struct_xyz", "a").unwrap_err().to_string();
        assert!(e.contains("no_such_struct_xyz"), "{e}");
    }

    #[test]
    fn every_offset_the_probes_need_resolves_and_tracepoints_are_known() {
        let k = kernel();
        let o = k.offsets().unwrap();
        // Distinct fields of one struct cannot share an offset.
        assert_ne!(o.hrtimer_expires, o.hrtimer_softexpires);
        assert_ne!(o.hrtimer_function, o.hrtimer_expires);
        assert_ne!(o.timer_list_expires, o.timer_list_function);
        assert!(k.has_tracepoint("hrtimer_start"));
        assert!(!k.has_tracepoint("no_such_tracepoint_xyz"));
    }
}
