//! Device configuration as the `husk-vmm` flags spell it: `--disk path=P[,ro=on][,serial=S]`,
//! `--vsock cid=N,uds=PATH`, `--net tap=NAME[,mac=M]` / `--net fd=N[,mac=M]`,
//! `--fs socket=PATH,tag=TAG`.
//!
//! Owns: parsing and validating those strings into typed configs, with errors that name the
//! flag and key. Must not touch: files, sockets or devices (the devices open what they need).

use std::path::PathBuf;
use std::str::FromStr;

/// A bad device option.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--{flag}: {message}")]
pub struct ConfigError {
    /// The flag (`disk`, `vsock`, `net`).
    pub flag: &'static str,
    /// What is wrong.
    pub message: String,
}

fn err(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        message: message.into(),
    }
}

/// Splits `k=v,k=v`, refusing unknown and repeated keys.
fn pairs<'a>(
    flag: &'static str,
    s: &'a str,
    known: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, ConfigError> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for part in s.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| err(flag, format!("expected key=value, got {part:?}")))?;
        if !known.contains(&k) {
            return Err(err(
                flag,
                format!("unknown key {k:?} (known: {})", known.join(", ")),
            ));
        }
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(err(flag, format!("{k} given twice")));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn on_off(flag: &'static str, key: &str, v: &str) -> Result<bool, ConfigError> {
    match v {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(err(flag, format!("{key}={v:?}: expected on or off"))),
    }
}

/// One `--disk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Raw image or block device.
    pub path: PathBuf,
    /// Expose it read-only.
    pub read_only: bool,
    /// Serial (up to 20 bytes) the guest reads with GET_ID (`/sys/block/vdX/serial`).
    pub serial: Option<String>,
}

impl FromStr for DiskConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const F: &str = "disk";
        let mut path = None;
        let mut read_only = false;
        let mut serial = None;
        for (k, v) in pairs(F, s, &["path", "ro", "serial"])? {
            match k {
                "path" if !v.is_empty() => path = Some(PathBuf::from(v)),
                "path" => return Err(err(F, "path is empty")),
                "ro" => read_only = on_off(F, k, v)?,
                _ => {
                    if v.len() > 20 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(err(
                            F,
                            format!("serial {v:?}: at most 20 printable ASCII characters"),
                        ));
                    }
                    serial = Some(v.to_owned());
                }
            }
        }
        Ok(Self {
            path: path.ok_or_else(|| err(F, "path= is required"))?,
            read_only,
            serial,
        })
    }
}

/// The `--vsock` device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context id (3 or more).
    pub cid: u32,
    /// The host-side Unix socket; guest-initiated connections to port P go to `<uds>_P`.
    pub uds: PathBuf,
}

impl FromStr for VsockConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const F: &str = "vsock";
        let mut cid = None;
        let mut uds = None;
        for (k, v) in pairs(F, s, &["cid", "uds"])? {
            match k {
                "cid" => {
                    let n: u32 = v
                        .parse()
                        .map_err(|_| err(F, format!("cid={v:?} is not a number")))?;
                    if n < 3 || n == u32::MAX {
                        return Err(err(F, format!("cid={n}: must be 3..4294967294")));
                    }
                    cid = Some(n);
                }
                _ if v.is_empty() => return Err(err(F, "uds is empty")),
                _ => uds = Some(PathBuf::from(v)),
            }
        }
        Ok(Self {
            cid: cid.ok_or_else(|| err(F, "cid= is required"))?,
            uds: uds.ok_or_else(|| err(F, "uds= is required"))?,
        })
    }
}

/// Where a `--net` device's frames go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetBackend {
    /// Open (or create) the TAP interface of this name in the VMM's network namespace.
    Tap(String),
    /// An already-open TAP fd inherited from the caller (it may live in another namespace).
    Fd(i32),
}

/// One `--net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The TAP.
    pub backend: NetBackend,
    /// The guest's MAC; a locally administered one is generated when absent.
    pub mac: Option<[u8; 6]>,
}

/// Parses `aa:bb:cc:dd:ee:ff` (the `macaddr` crate, which the agent uses too).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    s.parse::<macaddr::MacAddr6>().ok().map(|m| m.into_array())
}

impl FromStr for NetConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const F: &str = "net";
        let mut backend = None;
        let mut mac = None;
        for (k, v) in pairs(F, s, &["tap", "fd", "mac"])? {
            match k {
                "tap" | "fd" if backend.is_some() => {
                    return Err(err(F, "give either tap= or fd=, not both"))
                }
                "tap" => {
                    // IFNAMSIZ is 16 including the NUL.
                    if v.is_empty() || v.len() > 15 || v.contains('/') {
                        return Err(err(F, format!("tap={v:?}: not an interface name")));
                    }
                    backend = Some(NetBackend::Tap(v.to_owned()));
                }
                "fd" => {
                    let fd: i32 = v
                        .parse()
                        .ok()
                        .filter(|&n| n >= 0)
                        .ok_or_else(|| err(F, format!("fd={v:?} is not a file descriptor")))?;
                    backend = Some(NetBackend::Fd(fd));
                }
                _ => {
                    let m = parse_mac(v)
                        .ok_or_else(|| err(F, format!("mac={v:?}: expected aa:bb:cc:dd:ee:ff")))?;
                    if m[0] & 1 != 0 {
                        return Err(err(F, format!("mac={v}: a multicast address")));
                    }
                    mac = Some(m);
                }
            }
        }
        Ok(Self {
            backend: backend.ok_or_else(|| err(F, "tap= or fd= is required"))?,
            mac,
        })
    }
}

/// One `--fs`: a virtio-fs device served by a vhost-user backend (virtiofsd) listening on
/// `socket`; the guest mounts it with `mount -t virtiofs <tag> <dir>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// The backend's vhost-user socket (connected when the VM is built).
    pub socket: PathBuf,
    /// The mount tag (1 to 36 printable ASCII characters, no spaces).
    pub tag: String,
}

impl FromStr for FsConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const F: &str = "fs";
        let mut socket = None;
        let mut tag = None;
        for (k, v) in pairs(F, s, &["socket", "tag"])? {
            match k {
                "socket" if v.is_empty() => return Err(err(F, "socket is empty")),
                "socket" => socket = Some(PathBuf::from(v)),
                _ => {
                    if v.is_empty() || v.len() > 36 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(err(
                            F,
                            format!("tag {v:?}: 1 to 36 printable ASCII characters, no spaces"),
                        ));
                    }
                    tag = Some(v.to_owned());
                }
            }
        }
        Ok(Self {
            socket: socket.ok_or_else(|| err(F, "socket= is required"))?,
            tag: tag.ok_or_else(|| err(F, "tag= is required"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_flags() {
        let d: DiskConfig = "path=/a.img,ro=on,serial=rootfs".parse().unwrap();
        assert_eq!(
            d,
            DiskConfig {
                path: "/a.img".into(),
                read_only: true,
                serial: Some("rootfs".into())
            }
        );
        let d: DiskConfig = "path=/b".parse().unwrap();
        assert!(!d.read_only && d.serial.is_none());
        for bad in [
            "",
            "ro=on",
            "path=",
            "path=/a,ro=maybe",
            "path=/a,size=3",
            "path=/a,path=/b",
            "path=/a,serial=abcdefghijklmnopqrstuvwxyz",
            "/a.img",
        ] {
            let e = bad.parse::<DiskConfig>().unwrap_err();
            assert!(e.to_string().starts_with("--disk: "), "{bad}: {e}");
        }
    }

    #[test]
    fn vsock_flags() {
        let v: VsockConfig = "cid=3,uds=/run/v.sock".parse().unwrap();
        assert_eq!(v.cid, 3);
        assert_eq!(v.uds, PathBuf::from("/run/v.sock"));
        for bad in [
            "cid=2,uds=/x",
            "cid=x,uds=/x",
            "uds=/x",
            "cid=5",
            "cid=5,uds=",
        ] {
            assert!(bad.parse::<VsockConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn net_flags() {
        let n: NetConfig = "tap=tap0,mac=02:00:00:aa:bb:cc".parse().unwrap();
        assert_eq!(n.backend, NetBackend::Tap("tap0".into()));
        assert_eq!(n.mac, Some([2, 0, 0, 0xaa, 0xbb, 0xcc]));
        let n: NetConfig = "fd=5".parse().unwrap();
        assert_eq!(n.backend, NetBackend::Fd(5));
        for bad in [
            "tap=",
            "tap=averyveryverylongname",
            "fd=-1",
            "tap=a,fd=3",
            "mac=02:00:00:00:00:01",
            "tap=t,mac=01:00:00:00:00:00",
            "tap=t,mac=zz:00:00:00:00:00",
            "tap=t,mac=02:00:00:00:00",
        ] {
            assert!(bad.parse::<NetConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn fs_flags() {
        let f: FsConfig = "socket=/run/vfs.sock,tag=hostshare".parse().unwrap();
        assert_eq!(
            f,
            FsConfig {
                socket: "/run/vfs.sock".into(),
                tag: "hostshare".into()
            }
        );
        for bad in [
            "",
            "socket=/s",
            "tag=t",
            "socket=,tag=t",
            "socket=/s,tag=",
            "socket=/s,tag=has space",
            "socket=/s,tag=0123456789012345678901234567890123456",
            "socket=/s,tag=t,dax=on",
        ] {
            let e = bad.parse::<FsConfig>().unwrap_err();
            assert!(e.to_string().starts_with("--fs: "), "{bad}: {e}");
        }
    }
}
