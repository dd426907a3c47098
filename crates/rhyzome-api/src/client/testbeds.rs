//! Test-bed operations of the [`Client`]: apply, list, show, collect, destroy.

use super::{percent_encode, Client, ClientError};
use crate::{Testbed, TestbedApply, TestbedList, TestbedPlan};
use std::io::Read;
use std::time::Duration;

fn testbed_path(name: &str) -> String {
    format!("/testbeds/{}", percent_encode(name))
}

impl Client {
    pub fn apply_testbed(&self, req: &TestbedApply) -> Result<TestbedPlan, ClientError> {
        self.json(self.http.post(self.url("/testbeds")).json(req))
    }

    pub fn list_testbeds(&self) -> Result<Vec<Testbed>, ClientError> {
        let list: TestbedList = self.json(self.http.get(self.url("/testbeds")))?;
        Ok(list.testbeds)
    }

    pub fn get_testbed(&self, name: &str) -> Result<Testbed, ClientError> {
        self.json(self.http.get(self.url(&testbed_path(name))))
    }

    /// The bed's results archive (`application/x-tar`), as a reader over the response: the
    /// server streams it, so nothing is held here either.
    pub fn collect_testbed(&self, name: &str) -> Result<Box<dyn Read + Send>, ClientError> {
        let path = format!("{}/collect", testbed_path(name));
        let resp = self.send(
            self.http
                .get(self.url(&path))
                .timeout(Duration::from_secs(3600)),
        )?;
        Ok(Box::new(resp))
    }

    pub fn delete_testbed(&self, name: &str) -> Result<(), ClientError> {
        self.send(self.http.delete(self.url(&testbed_path(name))))?;
        Ok(())
    }
}
