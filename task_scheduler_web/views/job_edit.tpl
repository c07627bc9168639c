% rebase('base.tpl')
<p class="crumbs"><a href="/jobs">{{t('nav.jobs')}}</a> / <a href="/jobs/{{job['id']}}">{{job['id']}}</a> /</p>
<h1>{{t('edit.heading')}} <span class="mono">{{job['id']}}</span></h1>
% include('_job_form.tpl', action='/jobs/' + job['id'] + '/edit', editing=True, cancel='/jobs/' + job['id'])
