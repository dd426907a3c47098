//! Network operations of the [`Client`]: create, list, show, remove.

use super::{percent_encode, Client, ClientError};
use crate::{Network, NetworkCreate, NetworkList};

fn network_path(name: &str) -> String {
    format!("/networks/{}", percent_encode(name))
}

impl Client {
    pub fn create_network(&self, req: &NetworkCreate) -> Result<Network, ClientError> {
        self.json(self.http.post(self.url("/networks")).json(req))
    }

    pub fn list_networks(&self) -> Result<Vec<Network>, ClientError> {
        let list: NetworkList = self.json(self.http.get(self.url("/networks")))?;
        Ok(list.networks)
    }

    pub fn get_network(&self, name: &str) -> Result<Network, ClientError> {
        self.json(self.http.get(self.url(&network_path(name))))
    }

    pub fn delete_network(&self, name: &str) -> Result<(), ClientError> {
        self.send(self.http.delete(self.url(&network_path(name))))?;
        Ok(())
    }
}
