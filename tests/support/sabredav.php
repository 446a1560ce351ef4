<?php
// SabreDAV 1.8 (Debian's php-sabre-dav) as a CardDAV server for the tests (tests/support/dav.rs):
// SQLite in SABRE_DB, user alice, Digest (the stock PDO backend) or Basic by SABRE_AUTH.
// PHP 8.2 warns of what the 1.8 line does (dynamic properties, old signatures): notices
// and deprecations are masked so they do not turn into answers.
error_reporting(E_ALL & ~E_DEPRECATED & ~E_USER_DEPRECATED & ~E_NOTICE & ~E_STRICT);
set_include_path('/usr/share/php' . PATH_SEPARATOR . get_include_path());
date_default_timezone_set('UTC');
require_once 'Sabre/autoload.php';

$pdo = new PDO('sqlite:' . getenv('SABRE_DB'));
$pdo->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);

class TestBasic extends Sabre\DAV\Auth\Backend\AbstractBasic {
    protected function validateUserPass($username, $password) {
        return $username === 'alice' && $password === getenv('SABRE_PASSWORD');
    }
}

$authBackend = getenv('SABRE_AUTH') === 'basic'
    ? new TestBasic()
    : new Sabre\DAV\Auth\Backend\PDO($pdo);
$principalBackend = new Sabre\DAVACL\PrincipalBackend\PDO($pdo);
$carddavBackend = new Sabre\CardDAV\Backend\PDO($pdo);
$server = new Sabre\DAV\Server(array(
    new Sabre\DAVACL\PrincipalCollection($principalBackend),
    new Sabre\CardDAV\AddressBookRoot($principalBackend, $carddavBackend),
));
$server->setBaseUri('/');
$server->addPlugin(new Sabre\DAV\Auth\Plugin($authBackend, 'SabreDAV'));
$server->addPlugin(new Sabre\CardDAV\Plugin());
$server->addPlugin(new Sabre\DAVACL\Plugin());
$server->exec();
