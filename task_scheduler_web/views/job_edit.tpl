% rebase('base.tpl')
<p class="crumbs"><a href="/jobs">{{t('nav.jobs')}}</a> / <a href="/jobs/{{job['id']}}">{{job['id']}}</a> /</p>
<h1>{{t('edit.heading')}} <span class="mono">{{job['id']}}</span></h1>
% if yaml_file:
<p class="note" data-testid="yaml-edit-note">{{t('edit.yaml_note', where='%s:%s' % (yaml_file.get('path'), yaml_file.get('line')))}}</p>
% end
% if conflict:
<section class="panel conflict" data-testid="yaml-conflict" role="alert">
  <h2>{{t('edit.conflict_heading')}}</h2>
  <p>{{t('edit.conflict_note')}}</p>
  % if conflict['diff']:
  <pre class="pre diff" data-testid="yaml-diff">
  % for line in conflict['diff']:
<span class="{{'diff-add' if line.startswith('+') and not line.startswith('+++') else 'diff-del' if line.startswith('-') and not line.startswith('---') else 'diff-at' if line.startswith('@@') else ''}}">{{line}}</span>\\
  % end
</pre>
  % else:
  <p class="muted">{{t('edit.conflict_no_diff')}}</p>
  % end
</section>
% end
% include('_job_form.tpl', action='/jobs/' + job['id'] + '/edit', editing=True, cancel='/jobs/' + job['id'])
