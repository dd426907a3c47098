//! Host operations of the [`Client`]: list the libvirt hosts the daemon drives, and show one.

use super::{percent_encode, Client, ClientError};
use crate::{Host, HostList};

fn host_path(name: &str) -> String {
    format!("/hosts/{}", percent_encode(name))
}

impl Client {
    pub fn list_hosts(&self) -> Result<Vec<Host>, ClientError> {
        let list: HostList = self.json(self.http.get(self.url("/hosts")))?;
        Ok(list.hosts)
    }

    pub fn get_host(&self, name: &str) -> Result<Host, ClientError> {
        self.json(self.http.get(self.url(&host_path(name))))
    }
}
