//! Users and groups from the container's own /etc/passwd and /etc/group (no glibc NSS, as
//! runc does): home directory for HOME, and name lookups for exec requests that name a user.

use std::path::Path;

/// One /etc/passwd entry (the fields we use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One /etc/group entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

/// Reads a database file under `root`; a missing file is an empty database.
fn read_db(root: &Path, name: &str) -> String {
    std::fs::read_to_string(root.join(name)).unwrap_or_default()
}

/// HOME for `uid`: its passwd entry's home, or "/" as runc does.
pub fn home_for_uid(root: &Path, uid: u32) -> String {
    parse_passwd(&read_db(root, "etc/passwd"))
        .into_iter()
        .find(|e| e.uid == uid)
        .map(|e| e.home)
        .unwrap_or_else(|| "/".to_string())
}

/// Resolves "name", "uid", "name:group" or "uid:gid" against the container's databases.
/// Returns (uid, gid, supplementary gids of the user).
pub fn resolve(root: &Path, spec: &str) -> Option<(u32, u32, Vec<u32>)> {
    let passwd = parse_passwd(&read_db(root, "etc/passwd"));
    let groups = parse_group(&read_db(root, "etc/group"));
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = passwd.iter().find(|e| e.name == user);
    let uid = match (user.parse::<u32>(), entry) {
        (Ok(n), _) => n,
        (Err(_), Some(e)) => e.uid,
        (Err(_), None) => return None,
    };
    let entry = entry.or_else(|| passwd.iter().find(|e| e.uid == uid));
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups.iter().find(|e| e.name == g)?.gid,
        },
        None => entry.map(|e| e.gid).unwrap_or(0),
    };
    let extra = entry
        .map(|e| {
            groups
                .iter()
                .filter(|g| g.members.contains(&e.name) && g.gid != gid)
                .map(|g| g.gid)
                .collect()
        })
        .unwrap_or_default();
    Some((uid, gid, extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\n# c\nwww:x:33:33:www:/var/www:/bin/false\nbad\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nadm:x:4:www,root\nvideo:x:44:www\n";

    fn rootfs() -> tempdir::Dir {
        let d = tempdir::Dir::new();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(d.path().join("etc/group"), GROUP).unwrap();
        d
    }

    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let p = std::env::temp_dir().join(format!("husk-user-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn parses_and_skips_bad_lines() {
        assert_eq!(parse_passwd(PASSWD).len(), 2);
        assert_eq!(parse_group(GROUP)[2].members, vec!["www", "root"]);
    }

    #[test]
    fn resolves_names_numbers_and_groups() {
        let d = rootfs();
        assert_eq!(resolve(d.path(), "www"), Some((33, 33, vec![4, 44])));
        assert_eq!(resolve(d.path(), "www:adm"), Some((33, 4, vec![44])));
        assert_eq!(resolve(d.path(), "1000:1000"), Some((1000, 1000, vec![])));
        assert_eq!(resolve(d.path(), "nobody"), None);
        assert_eq!(home_for_uid(d.path(), 33), "/var/www");
        assert_eq!(home_for_uid(d.path(), 5), "/");
    }
}
