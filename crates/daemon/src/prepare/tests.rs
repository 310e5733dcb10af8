//! Unit tests of the task preparation helpers.
use super::*;

#[test]
fn folder_names() {
    assert_eq!(repo_folder_name("https://github.com/a/b.git"), "b");
    assert_eq!(repo_folder_name("git@github.com:a/b.git"), "b");
    assert_eq!(repo_folder_name("/tmp/x/repo/"), "repo");
    assert_eq!(repo_folder_name("file:///tmp/x/my repo"), "my_repo");
    assert_eq!(repo_folder_name(".."), "repository");
}
