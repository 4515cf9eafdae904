"""
Example handler modules; C{agilerpc.examples.hello} is served by default.
"""
